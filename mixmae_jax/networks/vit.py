"""The plain Vision Transformer (ViT) encoder family, as MAE pretrains and fine-tunes it.

An encoder module (see `networks/__init__.py` for the contract). Patch embedding by a strided
convolution (no norm), a learned `cls_token`, a position table with a cls slot (fixed 2-D sin-cos
in pretraining, a learned `pos_embed` parameter in fine-tuning, started from the sin-cos table),
pre-norm blocks with LayerNorm eps 1e-6, and either the final `norm` (pretraining, the cls-token
feature of MAE's linear probe) or MAE's global pool (mean of the patch tokens, then `fc_norm`).

Parameter names follow facebookresearch/mae (`models_mae.py`, `models_vit.py`): `patch_embed/proj`,
`cls_token`, `pos_embed`, `blocks_{i}/{norm1,attn/qkv,attn/proj,norm2,mlp/fc1,mlp/fc2}`, `norm`,
`fc_norm`.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import config_fields, flops, resolution
from mixmae_jax.networks.compute_options import REMAT_POLICIES, ComputeOptions
from mixmae_jax.networks.layers import Dtype, AttentionModifier, Block, layer_norm, patch_conv
from mixmae_jax.networks.position_embedding import sincos_2d

NAME = 'vit'
POS_EMBEDS = ('sincos', 'learned')

SIZES = {
    #        embed_dim  depth  num_heads  patch_size
    'tiny': (192, 12, 3, 16),
    'small': (384, 12, 6, 16),
    'base': (768, 12, 12, 16),
    'large': (1024, 24, 16, 16),
    'huge': (1280, 32, 16, 14),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """A ViT encoder with a cls token."""
  name: ClassVar[str] = NAME
  img_size: int = 224
  patch_size: int = 16
  in_chans: int = 3
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.0
  norm_eps: float = 1e-6
  pos_embed: str = 'sincos'  # 'sincos': fixed table (pretraining); 'learned': a parameter
  global_pool: bool = True  # features: mean patch token + fc_norm; False: the cls token after norm

  @property
  def grid(self) -> int:
    return self.img_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid**2

  @property
  def num_features(self) -> int:
    return self.embed_dim

  def problems(self) -> List[str]:
    out = []
    if self.img_size % self.patch_size:
      out.append(f'img_size={self.img_size} is not a multiple of patch_size={self.patch_size}: '
                 f'use e.g. {max(1, self.img_size // self.patch_size) * self.patch_size}.')
    if self.embed_dim % self.num_heads:
      out.append(f'num_heads={self.num_heads} does not divide embed_dim={self.embed_dim}.')
    if self.embed_dim % 4:
      out.append(f'embed_dim={self.embed_dim} must be a multiple of 4 (2-D sin-cos table).')
    if self.depth < 1:
      out.append(f'depth={self.depth} must be at least 1.')
    if self.pos_embed not in POS_EMBEDS:
      out.append(f'pos_embed={self.pos_embed!r}: use sincos (fixed) or learned.')
    return out


Config = ViTConfig


def config(size: str, **overrides) -> ViTConfig:
  """A ViT of a named size from SIZES (B/16, L/16, H/14, ...), with any field overridden."""
  return config_fields.sized(ViTConfig, SIZES, ('embed_dim', 'depth', 'num_heads', 'patch_size'),
                             size, 'ViT', overrides)


RUNLOCAL = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)


DEMO = dict(img_size=128, patch_size=16, embed_dim=128, depth=4, num_heads=4)
# MAE fine-tunes the position table (started from the sin-cos one) and pools globally; its linear
# probe reads the cls token after the final norm.
CLASSIFIER_FIELDS = dict(pos_embed='learned', global_pool=True)
PROBE_FIELDS = dict(global_pool=False)


def sincos_table(dim: int, grid: int) -> np.ndarray:
  """[1, 1 + grid^2, dim] MAE's fixed table: a zero row for the cls token, then 2-D sin-cos."""
  table = sincos_2d(dim, grid, grid)
  return np.concatenate([np.zeros((1, dim), np.float32), table])[None]


class PatchEmbed(nn.Module):
  """Conv patch x patch, stride patch (timm `PatchEmbed`, no norm). -> [B, L, D], raster order."""
  embed_dim: int
  patch_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    # MAE initialises the kernel xavier-uniform as a [D, p*p*3] matrix; the bias keeps
    # PyTorch's default.
    kernel_init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform',
                                                   in_axis=(0, 1, 2), out_axis=-1)
    x = patch_conv(self.embed_dim, p, p * p * images.shape[-1], self.dtype, kernel_init)(
        images.astype(self.dtype))
    return x.reshape(x.shape[0], -1, self.embed_dim).astype(jnp.float32)


class Encoder(nn.Module):
  """The ViT encoder: `patch_embed`, `cls_token`, [`pos_embed`], `blocks_{i}`, `norm`/`fc_norm`.

  `__call__(images, train)`: images [B, H, W, 3] -> normalized tokens [B, 1 + L, D], cls first.
  MAE's pretraining calls `embed`, keeps a subset of the tokens, then `with_cls` and `encode`;
  an objective that mixes several images into one sequence does so between `embed` and
  `with_cls` and may pass `encode` attention modifiers (a mask or top-k keys per block).
  """
  config: ViTConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.patch_embed = PatchEmbed(c.embed_dim, c.patch_size, self.dtype)
    self.cls_token = self.param('cls_token', nn.initializers.normal(0.02), (1, 1, c.embed_dim))
    if c.pos_embed == 'learned':
      self.pos_embed = self.param('pos_embed', nn.initializers.truncated_normal(0.02),
                                  (1, 1 + c.num_patches, c.embed_dim))
    rates = np.linspace(0.0, c.drop_path_rate, c.depth).tolist()
    block = Block
    if self.options.remat != 'none':  # (self, x, allowed, train, modifier): train is static
      block = nn.remat(Block, policy=REMAT_POLICIES[self.options.remat], static_argnums=(3,))
    self.blocks = [block(c.num_heads, c.mlp_ratio, rates[i], self.dtype, self.options.attention,
                         c.norm_eps) for i in range(c.depth)]
    self.norm = layer_norm(epsilon=c.norm_eps, dtype=jnp.float32)
    self.fc_norm = layer_norm(epsilon=c.norm_eps, dtype=jnp.float32)

  def position_table(self) -> jax.Array:
    """[1, 1 + L, D]: the learned `pos_embed` or the fixed sin-cos table (cls slot first)."""
    if self.config.pos_embed == 'learned':
      return self.pos_embed
    return jnp.asarray(sincos_table(self.config.embed_dim, self.config.grid))

  def embed(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> patch tokens with their positions added, [B, L, D]."""
    return self.patch_embed(images) + self.position_table()[:, 1:]

  def with_cls(self, x: jax.Array, copies: int = 1) -> jax.Array:
    """[B, N, D] -> [B, copies + N, D]: the cls token (plus its position slot) in front, once
    or `copies` times (one per image of a sequence that mixes several)."""
    cls = (self.cls_token + self.position_table()[:, :1]).astype(x.dtype)
    cls = jnp.broadcast_to(cls, (x.shape[0], copies, x.shape[-1]))
    return jnp.concatenate([cls, x], axis=1)

  def run_blocks(self, x: jax.Array, train: bool = False,
                 modifiers: Optional[Sequence[Optional[AttentionModifier]]] = None):
    """The blocks on [B, N, D] tokens -> [B, N, D].

    `modifiers`: one `layers.AttentionModifier` or None per block, changing what that block's
    attention does (a mask, top-k keys) without changing its parameters. With them, returns
    ([B, N, D], [each block's attention statistics, {} for blocks without a modifier]).
    """
    if modifiers is None:
      for block in self.blocks:
        x = block(x, None, train)
      return x
    if len(modifiers) != len(self.blocks):
      raise ValueError(f'{len(modifiers)} attention modifiers for {len(self.blocks)} blocks.')
    stats = []
    for block, modifier in zip(self.blocks, modifiers):
      if modifier is None:
        x, block_stats = block(x, None, train), {}
      else:
        x, block_stats = block(x, None, train, modifier)
      stats.append(block_stats)
    return x, stats

  def encode(self, x: jax.Array, train: bool = False,
             modifiers: Optional[Sequence[Optional[AttentionModifier]]] = None):
    """Blocks, then the final norm: [B, N, D] -> [B, N, D] (and the blocks' statistics when
    `modifiers` are given, as `run_blocks`)."""
    if modifiers is None:
      return self.norm(self.run_blocks(x, train))
    x, stats = self.run_blocks(x, train, modifiers)
    return self.norm(x), stats

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.encode(self.with_cls(self.embed(images)), train)

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """[B, D] for a head: MAE's global pool (mean patch token, `fc_norm`) or the normed cls."""
    x = self.run_blocks(self.with_cls(self.embed(images)), train)
    if self.config.global_pool:
      return self.fc_norm(x[:, 1:].mean(axis=1))
    return self.norm(x)[:, 0]


# ---- what generic code asks of an encoder (networks/__init__.py) ----

SHAPE_FIELDS = ('embed_dim', 'depth', 'num_heads', 'patch_size', 'in_chans', 'mlp_ratio',
                'qkv_bias')
NO_WEIGHT_DECAY = frozenset({'pos_embed', 'cls_token'})  # timm's `no_weight_decay()`
SCANS_BLOCKS = False  # the blocks always run unrolled


def features_config(config: ViTConfig, param_names) -> ViTConfig:
  """The config whose `features` these params can give: a pretraining ViT has no fine-tuning
  `fc_norm` yet, so its features are the normed cls token (as an encoder-only release's are)."""
  if config.global_pool and 'fc_norm' not in param_names:
    return dataclasses.replace(config, global_pool=False)
  return config


def is_encoder_param(name: str) -> bool:
  return name in ('patch_embed', 'cls_token', 'pos_embed', 'norm', 'fc_norm') or \
      name.startswith('blocks_')


def num_layer_ids(config: ViTConfig) -> int:
  return config.depth + 1


def layer_id(names: Sequence[str], config: ViTConfig) -> int:
  """MAE's `get_layer_id_for_vit`: cls token, positions and patch embed 0, block i i + 1,
  anything else (norms, head) depth + 1, which trains at the full rate."""
  top = names[0]
  if top in ('cls_token', 'pos_embed', 'patch_embed'):
    return 0
  if top.startswith('blocks_'):
    return int(top[len('blocks_'):]) + 1
  return config.depth + 1


def adapt(params: Dict[str, Any], source: ViTConfig,
          target: ViTConfig) -> Tuple[Dict[str, Any], ViTConfig]:
  """Encoder params moved to `target`'s input size and position-embedding kind.

  A learned target table starts from the source's table (its learned one, or the sin-cos table
  of its grid) with the patch part resized bicubically as MAE's `interpolate_pos_embed` does.
  """
  for field in SHAPE_FIELDS:
    if getattr(source, field) != getattr(target, field):
      raise ValueError(f'cannot adapt: {field} differs ({getattr(source, field)} vs '
                       f'{getattr(target, field)}); only img_size, pooling and pos_embed may.')
  out = dict(params)
  if target.pos_embed == 'sincos':
    if source.pos_embed == 'learned':
      raise ValueError('the checkpoint has a learned pos_embed, which a fixed sin-cos table '
                       'would discard: set model.encoder.pos_embed=learned.')
    return out, target
  table = np.asarray(params['pos_embed'] if source.pos_embed == 'learned' else
                     sincos_table(source.embed_dim, source.grid), np.float32)
  if source.grid != target.grid:
    patches = table[0, 1:].reshape(source.grid, source.grid, -1)
    patches = resolution.bicubic_resize(patches, target.grid, target.grid)
    table = np.concatenate([table[0, :1], patches.reshape(target.num_patches, -1)])[None]
  out['pos_embed'] = table
  return out, target


def fixed_buffers(config: ViTConfig) -> Dict[str, np.ndarray]:
  """MAE's pretraining model carries its sin-cos table as `pos_embed` (requires_grad=False)."""
  if config.pos_embed != 'sincos':
    return {}
  return {'pos_embed': sincos_table(config.embed_dim, config.grid)}


def forward_flops(config: ViTConfig, tokens: int = 0) -> Dict[str, float]:
  """Forward FLOPs on one image: the patch embedding of every patch, then the blocks on
  `tokens` tokens (default all, cls included; MAE encodes 1 + the visible ones)."""
  tokens = tokens or 1 + config.num_patches
  return {'patch_embed': flops.linear(config.num_patches,
                                      config.patch_size**2 * config.in_chans, config.embed_dim),
          'blocks': config.depth * flops.transformer_block(tokens, config.embed_dim, tokens,
                                                           config.mlp_ratio)}
