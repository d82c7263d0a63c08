"""The ViT decoder shared by the pretraining objectives that reconstruct patches (MixMAE, MAE,
UM-MAE).

`decoder_embed` maps encoder tokens to the decoder width, a learned `mask_token` stands in for
every token the decoder must predict, pre-norm blocks run over the whole sequence (the caller
adds the position table it needs), then `decoder_norm` and `decoder_pred` give pixels per patch.
The objective decides which tokens are kept and where the mask tokens go. Parameter names are the
official ones of MixMIM and MAE alike (`mask_token`, `decoder_embed`, `decoder_blocks_{i}`,
`decoder_norm`, `decoder_pred`).
"""
import dataclasses
from typing import List

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax.networks import flops
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.layers import Dtype, Block, dense, layer_norm, trunc_normal_init



@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Width, depth and heads of the decoder; LayerNorm eps 1e-5 (MixMIM) or 1e-6 (MAE)."""
  dim: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0
  norm_eps: float = 1e-5

  def problems(self) -> List[str]:
    out = []
    if self.dim % self.num_heads:
      out.append(f'decoder_num_heads={self.num_heads} does not divide decoder_dim={self.dim}.')
    if self.dim % 4:
      out.append(f'decoder_dim={self.dim} must be a multiple of 4 (2-D sin-cos table).')
    if self.depth < 1:
      out.append(f'decoder_depth={self.depth} must be at least 1.')
    return out


class Decoder(nn.Module):
  """`embed` tokens into the decoder width; `predict` runs blocks, norm and the pixel head.

  `out_dim` is the number of values predicted per token (patch^2 x channels); `embed_dim`, when
  set, is the width `decoder_embed` maps to instead of the decoder's (UM-MAE embeds to 4 x 512
  and pixel-shuffles the result into 4 tokens).
  """
  config: DecoderConfig
  out_dim: int
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()
  embed_dim: int = 0

  def setup(self):
    c = self.config
    self.mask_token = self.param('mask_token', trunc_normal_init, (1, 1, c.dim))
    self.decoder_embed = dense(self.embed_dim or c.dim, dtype=self.dtype)
    self.decoder_blocks = [Block(c.num_heads, c.mlp_ratio, dtype=self.dtype,
                                 attention=self.options.attention, norm_eps=c.norm_eps)
                           for _ in range(c.depth)]
    self.decoder_norm = layer_norm(epsilon=c.norm_eps, dtype=self.dtype)
    self.decoder_pred = dense(self.out_dim, dtype=self.dtype)

  def embed(self, z: jax.Array) -> jax.Array:
    """Encoder tokens [..., C] -> [..., dim]."""
    return self.decoder_embed(z)

  def predict(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, N, dim] (positions already added) -> float32 predictions [B, N, out_dim]."""
    for block in self.decoder_blocks:
      x = block(x, train=train)
    return self.decoder_pred(self.decoder_norm(x)).astype(jnp.float32)


def forward_flops(config: DecoderConfig, embedded: int, sequences: int, length: int,
                  in_dim: int, out_dim: int) -> dict:
  """Decoder FLOPs for one image: `embedded` tokens embedded once, then `sequences` sequences of
  `length` tokens through the blocks and the pixel head."""
  return {
      'decoder_embed': flops.linear(embedded, in_dim, config.dim),
      'decoder_blocks': sequences * config.depth * flops.transformer_block(
          length, config.dim, length, config.mlp_ratio),
      'decoder_pred': sequences * flops.linear(length, config.dim, out_dim),
  }
