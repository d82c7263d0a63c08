"""The classifier used for fine-tuning and probing: any encoder, its pooled features, a linear head.

The encoder's params sit at the top level beside `head` (its scope is shared), so they carry the
official names (`patch_embed`, `layers_{i}`, `norm` for Swin; `cls_token`, `pos_embed`,
`blocks_{i}`, `fc_norm` for ViT) and a pretrained encoder's params drop in by name.
"""
import dataclasses
from typing import Any, List

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax import networks
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.layers import Dtype, dense
from mixmae_jax.networks.swin import SwinConfig



@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """An encoder (any family's Config) with a linear head over its pooled features."""
  encoder: Any = SwinConfig()
  num_classes: int = 1000

  def problems(self) -> List[str]:
    out = ['encoder.' + p for p in self.encoder.problems()]
    if self.num_classes < 1:
      out.append(f'num_classes={self.num_classes} must be at least 1.')
    return out


class Classifier(nn.Module):
  """`__call__(images, train=False)`: images [B, H, W, 3] (normalized) -> logits [B, classes].

  `features(images, train)` gives the pooled features [B, num_features] the head reads (the
  encoder's `features`: Swin's averaged final norm, ViT's global pool or cls token).
  """
  config: ClassifierConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()  # how, not what: never changes the params

  def setup(self):
    module = networks.encoder_module(self.config.encoder.name)
    self.encoder = module.Encoder(self.config.encoder, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    self.head = dense(self.config.num_classes, dtype=jnp.float32)

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.encoder.features(images, train)

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.head(self.features(images, train))
