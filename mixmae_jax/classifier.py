"""The Swin classifier used for fine-tuning: encoder, final LayerNorm, average pool, linear head.

Parameter names match the official fine-tuning model (`patch_embed`, `layers_{i}`, `norm`,
`head`), so a pretrained encoder's params drop in unchanged and only `head` is new.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax.architecture import ClassifierConfig
from mixmae_jax.compute_options import ComputeOptions
from mixmae_jax.layers import dense, layer_norm
from mixmae_jax.swin import PatchEmbed, absolute_position_embedding, make_stages, run_stages

Dtype = Any


class SwinClassifier(nn.Module):
  """`__call__(images, train=False)`: images [B, H, W, 3] (normalized) -> logits [B, classes].

  `features(images, train)` gives the pooled, normalized features [B, num_features].
  """
  config: ClassifierConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()  # how, not what: never changes the params

  def setup(self):
    enc = self.config.encoder
    self.patch_embed = PatchEmbed(enc.embed_dim, enc.patch_size, self.dtype)
    self.layers = make_stages(enc, self.dtype, self.options)
    self.norm = layer_norm(dtype=jnp.float32)
    self.head = dense(self.config.num_classes, dtype=jnp.float32)

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = self.patch_embed(images) + absolute_position_embedding(self.config.encoder)
    x = self.norm(run_stages(self.layers, x, None, train))
    return x.mean(axis=(1, 2))

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.head(self.features(images, train))
