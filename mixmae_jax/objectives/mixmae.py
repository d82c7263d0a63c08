"""MixMAE: mixed and masked autoencoding for hierarchical encoders (arXiv 2205.13137).

Reads like the method:
  1. draw one 7x7 unit mask per device and step; image i borrows its partner B-1-i's tokens at
     the masked units (`mix_tokens`, a gather on patch embeddings);
  2. the Swin encoder sees the mixed batch, each token attending only to its own image;
  3. the decoder reconstructs twice: branch 0 keeps each sample's own tokens, branch 1 its
     partner's, mask tokens elsewhere (`decode_dual`);
  4. each image is supervised at every position by the branch that hid it
     (`unmix_dual`, `dual_reconstruction_loss`).
Parameter names follow the official `MixMIM` module (flat: `patch_embed`, `layers_{i}`, `norm`,
`mask_token`, `decoder_embed`, `decoder_blocks_{i}`, `decoder_norm`, `decoder_pred`).
"""
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax import mixing
from mixmae_jax.architecture import MixMAEConfig
from mixmae_jax.compute_options import ComputeOptions
from mixmae_jax.layers import Block, dense, layer_norm, trunc_normal_init
from mixmae_jax.patches import pixel_targets
from mixmae_jax.position_embedding import sincos_2d
from mixmae_jax.swin import PatchEmbed, absolute_position_embedding, make_stages, run_stages

Dtype = Any


def dual_reconstruction_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all B x L x P values, in float32.

  pred, target: [B, L, P]; every patch is predicted exactly once (by the branch that hid it).
  """
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


class MixMAE(nn.Module):
  """MixMAE pretraining model.

  `__call__(images, mask=None, train=False)` with images [B, H, W, 3] (normalized) and an
  optional unit mask [H/32, W/32] (1 = image i shows its partner B-1-i there) returns
  {'loss': scalar, 'pred': [B, L, 32*32*3] each image's predicted patches, 'mask': [h, w]}.
  Without `mask`, one is drawn from the 'mask' rng and shared by the batch.
  """
  config: MixMAEConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()  # how, not what: never changes the params

  def setup(self):
    enc, dec = self.config.encoder, self.config.decoder
    self.patch_embed = PatchEmbed(enc.embed_dim, enc.patch_size, self.dtype)
    self.layers = make_stages(enc, self.dtype, self.options)
    self.norm = layer_norm(dtype=jnp.float32)
    if self.config.mix_embedding:
      self.mix_embed = self.param('mix_embed', trunc_normal_init, (2, enc.embed_dim))
    self.mask_token = self.param('mask_token', trunc_normal_init, (1, 1, dec.dim))
    self.decoder_embed = dense(dec.dim, dtype=self.dtype)
    self.decoder_blocks = [
        Block(dec.num_heads, dec.mlp_ratio, dtype=self.dtype, attention=self.options.attention)
        for _ in range(dec.depth)
    ]
    self.decoder_norm = layer_norm(dtype=self.dtype)
    self.decoder_pred = dense(enc.stride**2 * enc.in_chans, dtype=self.dtype)

  @property
  def mask_grid(self) -> int:
    return self.config.encoder.img_size // self.config.encoder.stride

  def draw_mask(self) -> jax.Array:
    """[g, g] unit mask from the 'mask' rng (g = img_size / 32)."""
    return mixing.draw_mask(self.make_rng('mask'), self.mask_grid, self.config.mask_ratio,
                            self.config.range_mask_ratio)

  def encode_mixed(self, images: jax.Array, mask: jax.Array, group: jax.Array,
                   train: bool) -> jax.Array:
    """Mix image pairs after patch embedding and encode with same-source attention.

    images: [B, H, W, 3]; mask: [g, g]; group: [B, 2]. Returns [B, g, g, num_features].
    """
    enc = self.config.encoder
    x = self.patch_embed(images)  # [B, G, G, C]
    b, grid, _, c = x.shape
    sources = mixing.stage_sources(mask, enc.num_stages)
    x = mixing.mix_tokens(x.reshape(b, grid * grid, c), sources[0].reshape(-1), group)
    x = x.reshape(b, grid, grid, c) + absolute_position_embedding(enc)
    if self.config.mix_embedding:
      x = x + self.mix_embed[sources[0]]
    return self.norm(run_stages(self.layers, x, sources, train))

  def decode_dual(self, z: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Both reconstruction branches in one decoder pass over 2B sequences.

    z: [B, g, g, C] encoder output; mask: [g, g]. Returns [2, B, L, P] float32, where branch s
    keeps the tokens of slot s and puts the mask token at the others.
    """
    dec = self.config.decoder
    b, gh, gw, _ = z.shape
    x = self.decoder_embed(z.reshape(b, gh * gw, -1))  # [B, L, D]
    token = self.mask_token.astype(x.dtype)
    slot = mask.reshape(1, -1, 1)
    x = jnp.concatenate([jnp.where(slot == 0, x, token), jnp.where(slot == 1, x, token)])
    x = x.astype(jnp.float32) + jnp.asarray(sincos_2d(dec.dim, gh, gw))[None]
    for block in self.decoder_blocks:
      x = block(x, train=train)
    x = self.decoder_pred(self.decoder_norm(x)).astype(jnp.float32)
    return x.reshape(2, b, gh * gw, -1)

  def __call__(self, images: jax.Array, mask: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, jax.Array]:
    enc = self.config.encoder
    if mask is None:
      mask = self.draw_mask()
    mask = jnp.asarray(mask, jnp.int32)
    group = mixing.flip_pairing(images.shape[0])
    z = self.encode_mixed(images, mask, group, train)
    branches = self.decode_dual(z, mask, train)
    pred = mixing.unmix_dual(branches, mask.reshape(-1), group)
    target = pixel_targets(images, enc.stride, self.config.norm_pix_loss)
    return {'loss': dual_reconstruction_loss(pred, target), 'pred': pred, 'mask': mask}
