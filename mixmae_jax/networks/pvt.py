"""The Pyramid Vision Transformer (PVT v1) encoder family, as UM-MAE pretrains and fine-tunes it.

An encoder module (see `networks/__init__.py` for the contract). Four stages of global attention
whose keys and values are spatially reduced (average pool by `sr`, Conv1x1, LayerNorm: the
sequence a query attends to shrinks by sr^2), MLP ratios 8, 8, 4, 4. The patch embedding is a
4x4 strided conv without norm; stages 2.. start with a 2x2 strided conv owned by their first
block; blocks are numbered flat over the stages (`blocks_{k}`). Positions: a 2-D sin-cos table
(dim C_0 on the patch grid) added once after the patch embedding, fixed in pretraining (UM-MAE
gathers it with the tokens it keeps), a learned `pos_embed` parameter (started from the
pretraining table) in fine-tuning. The blocks' LayerNorms have eps 1e-5, the final `norm` and
the head's `fc_norm` 1e-6, as in the official code.

Parameter names follow UM-MAE's `models_mae_pvt.py` / `models_pvt.py`: `patch_embed/proj`,
[`pos_embed`], `blocks_{k}/{downsample/proj, norm1, attn/{q, kv, sr, norm, proj}, norm2,
mlp/{fc1, fc2}}`, `norm`, `fc_norm`.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import config_fields, flops, resolution
from mixmae_jax.networks.compute_options import REMAT_POLICIES, ComputeOptions
from mixmae_jax.networks.layers import (Dtype, DropPath, Mlp, attention_weights_and_values, dense,
                                        fused_attention, layer_norm)
from mixmae_jax.networks.position_embedding import sincos_2d
from mixmae_jax.networks.ummae_swin_layers import Conv1x1, strided_conv

NAME = 'pvt'
POS_EMBEDS = ('sincos', 'learned')
BLOCK_NORM_EPS = 1e-5  # the official PVTBlock and its attention use nn.LayerNorm's default
FINAL_NORM_EPS = 1e-6

SIZES = {
    #         embed_dims            depths        num_heads     mlp_ratios
    'tiny': ((64, 128, 320, 512), (2, 2, 2, 2), (1, 2, 5, 8), (8, 8, 4, 4)),
    'small': ((64, 128, 320, 512), (3, 4, 6, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    'medium': ((64, 128, 320, 512), (3, 4, 18, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    'large': ((64, 128, 320, 512), (3, 8, 27, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
}
PRETRAIN_SR = (4, 2, 1, 1)
FINETUNE_SR = (8, 4, 2, 1)


@dataclasses.dataclass(frozen=True)
class PVTConfig:
  """A PVT v1 encoder; `sr_ratios` is the spatial reduction of keys and values per stage."""
  name: ClassVar[str] = NAME
  img_size: int = 256
  patch_size: int = 4
  in_chans: int = 3
  embed_dims: Tuple[int, ...] = (64, 128, 320, 512)
  depths: Tuple[int, ...] = (3, 4, 6, 3)
  num_heads: Tuple[int, ...] = (1, 2, 5, 8)
  mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4)
  sr_ratios: Tuple[int, ...] = PRETRAIN_SR
  qkv_bias: bool = True
  drop_path_rate: float = 0.0
  pos_embed: str = 'sincos'  # 'sincos': fixed table (pretraining); 'learned': a parameter
  head_norm: str = 'norm'  # features: 'fc_norm' (fine-tuning) or the final 'norm' (pretrained)

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def embed_dim(self) -> int:
    return self.embed_dims[0]

  @property
  def stride(self) -> int:
    return self.patch_size * 2**(self.num_stages - 1)

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  @property
  def grid(self) -> int:
    return self.img_size // self.patch_size

  def stage_grid(self, stage: int, grid: int = 0) -> int:
    return (grid or self.grid) // 2**stage

  def sr_problems(self, grid: int, where: str) -> List[str]:
    """Why `sr_ratios` cannot pool the stages when the first runs on a `grid` x `grid` map."""
    out = []
    for s, sr in enumerate(self.sr_ratios[:self.num_stages]):
      g = self.stage_grid(s, grid)
      if sr < 1 or g % sr:
        out.append(f'sr_ratios[{s}]={sr} does not divide the stage-{s} grid {g}x{g} ({where}).')
    return out

  def problems(self) -> List[str]:
    out = []
    n = self.num_stages
    for name in ('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios'):
      if len(getattr(self, name)) != n:
        out.append(f'{name}={getattr(self, name)} has {len(getattr(self, name))} entries but '
                   f'depths={self.depths} has {n}: give one per stage.')
    if out:
      return out
    out = config_fields.pyramid_problems(self.img_size, self.stride, self.embed_dims,
                                         self.num_heads, self.head_norm)
    if self.img_size % self.stride:
      return out
    if self.embed_dim % 4:
      out.append(f'embed_dims[0]={self.embed_dim} must be a multiple of 4 (2-D sin-cos table).')
    if self.pos_embed not in POS_EMBEDS:
      out.append(f'pos_embed={self.pos_embed!r}: use sincos (fixed) or learned.')
    return out + self.sr_problems(0, f'img_size {self.img_size}')


Config = PVTConfig


def config(size: str, **overrides) -> PVTConfig:
  """A PVT of a named size from SIZES, with any field overridden."""
  return config_fields.sized(PVTConfig, SIZES, ('embed_dims', 'depths', 'num_heads', 'mlp_ratios'),
                             size, 'PVT', overrides)


RUNLOCAL = dict(img_size=64, embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                num_heads=(1, 2, 4, 8), sr_ratios=(4, 2, 1, 1))
DEMO = dict(img_size=128, embed_dims=(32, 64, 128, 256), depths=(1, 1, 2, 1),
            num_heads=(1, 2, 4, 8), sr_ratios=(4, 2, 1, 1))
# Fine-tuning reduces more, learns the position table (started from the sin-cos one) and reads
# fc_norm; a probe keeps the pretraining's reduction and reads the final norm.
CLASSIFIER_FIELDS = dict(sr_ratios=FINETUNE_SR, pos_embed='learned', head_norm='fc_norm')
PROBE_FIELDS = dict(sr_ratios=PRETRAIN_SR, head_norm='norm')


def sincos_table(config: PVTConfig) -> np.ndarray:
  """[1, G, G, C_0] float32: the fixed 2-D sin-cos table on the patch grid."""
  g = config.grid
  return sincos_2d(config.embed_dim, g, g).reshape(1, g, g, -1)


def average_pool(x: jax.Array, size: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/size, W/size, C], non-overlapping means (F.avg_pool2d(x, size))."""
  if size == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // size, size, w // size, size, c).mean(axis=(2, 4))


class ConvEmbed(nn.Module):
  """A `size` x `size` strided conv named `proj` (patch embedding and merging, no norm)."""
  features: int
  size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H/size, W/size, features] float32."""
    return strided_conv(self.features, self.size, self.dtype, 'proj')(
        x.astype(self.dtype)).astype(jnp.float32)


class SpatialReductionAttention(nn.Module):
  """Queries from every token; keys and values from the tokens pooled by `sr`, Conv1x1, norm."""
  num_heads: int
  sr_ratio: int
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C]."""
    b, h, w, c = x.shape
    heads = self.num_heads
    q = dense(c, use_bias=self.qkv_bias, dtype=self.dtype, name='q')(x).reshape(b, h * w, heads,
                                                                               -1)
    reduced = Conv1x1(c, self.dtype, name='sr')(average_pool(x, self.sr_ratio))
    reduced = layer_norm(epsilon=BLOCK_NORM_EPS, dtype=self.dtype, name='norm')(reduced)
    kv = dense(2 * c, use_bias=self.qkv_bias, dtype=self.dtype, name='kv')(reduced)
    k, v = jnp.moveaxis(kv.reshape(b, -1, 2, heads, c // heads), 2, 0)
    if self.attention == 'plain':
      out = attention_weights_and_values(q, k, v)
    else:
      out = fused_attention(q, k, v, None, self.attention)
    return dense(c, dtype=self.dtype, name='proj')(out.reshape(b, h, w, c))


class PVTBlock(nn.Module):
  """[merge,] x + attn(norm1(x)); x + mlp(norm2(x)), with stochastic depth."""
  dim: int
  num_heads: int
  sr_ratio: int
  mlp_ratio: float
  drop_path: float = 0.0
  merge: bool = False  # the first block of stages 2.. owns the previous stage's 2x2 conv
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, C_in] float32 -> [B, H', W', dim]."""
    if self.merge:
      x = ConvEmbed(self.dim, 2, self.dtype, name='downsample')(x)
    drop = DropPath(self.drop_path)
    y = layer_norm(epsilon=BLOCK_NORM_EPS, dtype=self.dtype, name='norm1')(x)
    y = SpatialReductionAttention(self.num_heads, self.sr_ratio, self.qkv_bias, self.dtype,
                                  self.attention, name='attn')(y)
    x = x + drop(y, deterministic=not train)
    y = layer_norm(epsilon=BLOCK_NORM_EPS, dtype=self.dtype, name='norm2')(x)
    y = Mlp(int(self.dim * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    return x + drop(y, deterministic=not train)


def block_settings(config: PVTConfig) -> List[Dict[str, Any]]:
  """Per block (flat over stages): width, heads, reduction, MLP ratio, merge flag, drop path."""
  rates = np.linspace(0.0, config.drop_path_rate, sum(config.depths)).tolist()
  out = []
  for s, depth in enumerate(config.depths):
    for j in range(depth):
      out.append(dict(dim=config.embed_dims[s], num_heads=config.num_heads[s],
                      sr_ratio=config.sr_ratios[s], mlp_ratio=float(config.mlp_ratios[s]),
                      merge=s > 0 and j == 0, drop_path=rates[len(out)]))
  return out


class Encoder(nn.Module):
  """PVT: `patch_embed`, [`pos_embed`], `blocks_{k}`, `norm` (pretraining) / `fc_norm` (head).

  `__call__(images, train)`: [B, H, W, 3] -> final-normed tokens [B, H/32, W/32, F]. UM-MAE's
  pretraining calls `embed`, compacts tokens and `position_table()` alike, then `stages`.
  """
  config: PVTConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.patch_embed = ConvEmbed(c.embed_dim, c.patch_size, self.dtype)
    if c.pos_embed == 'learned':
      self.pos_embed = self.param('pos_embed', nn.initializers.truncated_normal(0.02),
                                  (1, c.grid**2, c.embed_dim))
    block = PVTBlock
    if self.options.remat != 'none':  # (self, x, train): train is static
      block = nn.remat(block, policy=REMAT_POLICIES[self.options.remat], static_argnums=(2,))
    self.blocks = [block(qkv_bias=c.qkv_bias, dtype=self.dtype, attention=self.options.attention,
                         **settings) for settings in block_settings(c)]
    self.norm = layer_norm(epsilon=FINAL_NORM_EPS, dtype=jnp.float32)
    self.fc_norm = layer_norm(epsilon=FINAL_NORM_EPS, dtype=jnp.float32)

  def embed(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> patch embeddings [B, G, G, C_0], without positions."""
    return self.patch_embed(images)

  def position_table(self) -> jax.Array:
    """[1, G, G, C_0]: the learned `pos_embed` or the fixed sin-cos table."""
    g = self.config.grid
    if self.config.pos_embed == 'learned':
      return self.pos_embed.reshape(1, g, g, -1)
    return jnp.asarray(sincos_table(self.config))

  def run_blocks(self, x: jax.Array, train: bool = False) -> jax.Array:
    for block in self.blocks:
      x = block(x, train)
    return x

  def stages(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Every block, then the final norm: [B, g, g, C_0] (positions added) -> [B, g/8, g/8, F]."""
    return self.norm(self.run_blocks(x, train))

  def full_grid(self, images: jax.Array, train: bool) -> jax.Array:
    return self.run_blocks(self.embed(images) + self.position_table(), train)

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.norm(self.full_grid(images, train))

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """[B, F]: the average token after fc_norm (fine-tuning) or the final norm, then average."""
    x = self.full_grid(images, train)
    if self.config.head_norm == 'fc_norm':
      return self.fc_norm(x.mean(axis=(1, 2)))
    return self.norm(x).mean(axis=(1, 2))


# ---- what generic code asks of an encoder (networks/__init__.py) ----

SHAPE_FIELDS = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'patch_size', 'in_chans',
                'qkv_bias')
NO_WEIGHT_DECAY = frozenset({'pos_embed'})  # the official PVT's `no_weight_decay()`
SCANS_BLOCKS = False


def is_encoder_param(name: str) -> bool:
  return name in ('patch_embed', 'pos_embed', 'norm', 'fc_norm') or name.startswith('blocks_')


def num_layer_ids(config: PVTConfig) -> int:
  return sum(config.depths) + 1


def layer_id(names: Sequence[str], config: PVTConfig) -> int:
  """UM-MAE's `get_layer_id_for_vit` on flat blocks: patch embed and positions 0, block k
  k + 1 (a merge shares the id of the block that owns it, the next stage's first), anything
  else (norms, head) sum(depths) + 1, which trains at the full rate."""
  top = names[0]
  if top in ('patch_embed', 'pos_embed'):
    return 0
  if top.startswith('blocks_'):
    return int(top[len('blocks_'):]) + 1
  return sum(config.depths) + 1


def adapt(params: Dict[str, Any], source: PVTConfig,
          target: PVTConfig) -> Tuple[Dict[str, Any], PVTConfig]:
  """Encoder params moved to `target`'s input size, reduction ratios and position kind.

  A learned target table starts from the source's (its learned one, or the sin-cos table of its
  grid), resized bicubically when the grid differs (the official `interpolate_pos_embed`).
  Reduction ratios change no parameter shapes.
  """
  for field in SHAPE_FIELDS:
    if getattr(source, field) != getattr(target, field):
      raise ValueError(f'cannot adapt: {field} differs ({getattr(source, field)} vs '
                       f'{getattr(target, field)}); only img_size, sr_ratios, pos_embed and '
                       f'head_norm may.')
  out = dict(params)
  if target.pos_embed == 'sincos':
    if source.pos_embed == 'learned':
      raise ValueError('the checkpoint has a learned pos_embed, which a fixed sin-cos table '
                       'would discard: set model.encoder.pos_embed=learned.')
    return out, target
  table = np.asarray(params['pos_embed'] if source.pos_embed == 'learned' else
                     sincos_table(source).reshape(1, -1, source.embed_dim), np.float32)
  if source.grid != target.grid:
    table = resolution.bicubic_resize(table.reshape(source.grid, source.grid, -1), target.grid,
                                      target.grid).reshape(1, target.grid**2, -1)
  out['pos_embed'] = table
  return out, target


def fixed_buffers(config: PVTConfig) -> Dict[str, np.ndarray]:
  """The pretraining model carries its sin-cos table as `pos_embed` (requires_grad=False)."""
  if config.pos_embed != 'sincos':
    return {}
  return {'pos_embed': sincos_table(config).reshape(1, config.grid**2, config.embed_dim)}


def forward_flops(config: PVTConfig, grid: int = 0) -> Dict[str, float]:
  """Forward FLOPs on one image whose first stage runs on `grid` (default the full grid)."""
  first = grid or config.grid
  out = {'patch_embed': flops.linear(config.grid**2, config.patch_size**2 * config.in_chans,
                                     config.embed_dim)}
  blocks = merging = 0.0
  for s in range(config.num_stages):
    g, dim, sr = config.stage_grid(s, first), config.embed_dims[s], config.sr_ratios[s]
    tokens, reduced = g * g, (g // sr)**2
    hidden = int(dim * config.mlp_ratios[s])
    per_block = (flops.linear(tokens, dim, 2 * dim) +  # q and proj
                 flops.linear(reduced, dim, dim) + flops.linear(reduced, dim, 2 * dim) +  # sr, kv
                 2.0 * 2 * tokens * reduced * dim +  # q.k^T and attn.v
                 flops.linear(tokens, dim, hidden) + flops.linear(tokens, hidden, dim))
    blocks += config.depths[s] * per_block
    if s:
      merging += flops.linear(tokens, 4 * config.embed_dims[s - 1], dim)
  out.update(blocks=blocks, patch_merging=merging)
  return out
