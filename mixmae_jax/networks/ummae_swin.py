"""UM-MAE's Swin encoder family: shifted windows with a position MLP instead of bias tables.

An encoder module (see `networks/__init__.py` for the contract); the blocks are in
`ummae_swin_layers.py`. It differs from the MixMIM/standard Swin (`swin.py`) in what UM-MAE
needs to run on its compacted grids: attention biases come from the tokens' own full-grid
coordinates (which travel with them), not from their place in a window; patch merging is a
LayerNorm + 2x2 strided conv owned by the next stage's first block; blocks are numbered flat
(`blocks_{k}` over all stages); LayerNorm eps is 1e-5 inside the blocks and 1e-6 elsewhere, as
in the official code; no absolute position embedding.

Pretraining runs window 8 on the compact 32x32 grid of a 256 image (`objectives/ummae.py`);
fine-tuning runs window 16 on the full 64x64 grid (`CLASSIFIER_FIELDS`). The head reads the
average token after `fc_norm` (fine-tuning) or after the pretraining's final `norm` (probes).
Parameter names follow the official `models_mae_swin.py` / `models_swin.py`.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import config_fields, flops
from mixmae_jax.networks import ummae_swin_layers as layers
from mixmae_jax.networks.compute_options import REMAT_POLICIES, ComputeOptions
from mixmae_jax.networks.layers import Dtype, layer_norm

NAME = 'ummae_swin'

SIZES = {
    #        embed_dim  depths          num_heads       posmlp_dim
    'tiny': (96, (2, 2, 6, 2), (3, 6, 12, 24), 32),
    'small': (96, (2, 2, 18, 2), (3, 6, 12, 24), 32),
    'base': (128, (2, 2, 18, 2), (4, 8, 16, 32), 32),
    'large': (192, (2, 2, 18, 2), (6, 12, 24, 48), 64),
}
PRETRAIN_WINDOW = 8  # on the compact grid
FINETUNE_WINDOW = 16  # on the full grid


@dataclasses.dataclass(frozen=True)
class UMSwinConfig:
  """UM-MAE's Swin. `window_size` is clipped to each stage's grid (no shift where clipped)."""
  name: ClassVar[str] = NAME
  img_size: int = 256
  patch_size: int = 4
  in_chans: int = 3
  embed_dim: int = 96
  depths: Tuple[int, ...] = (2, 2, 6, 2)
  num_heads: Tuple[int, ...] = (3, 6, 12, 24)
  window_size: int = PRETRAIN_WINDOW
  mlp_ratio: float = 4.0
  posmlp_dim: int = 32
  drop_path_rate: float = 0.0
  head_norm: str = 'norm'  # features: 'fc_norm' (fine-tuning) or the final 'norm' (pretrained)

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def stride(self) -> int:
    return self.patch_size * 2**(self.num_stages - 1)

  @property
  def num_features(self) -> int:
    return self.stage_dim(self.num_stages - 1)

  @property
  def grid(self) -> int:
    return self.img_size // self.patch_size

  def stage_dim(self, stage: int) -> int:
    return self.embed_dim * 2**stage

  def stage_grid(self, stage: int, grid: int = 0) -> int:
    """Token grid of a stage when the first stage runs on `grid` (default the full grid)."""
    return (grid or self.grid) // 2**stage

  def window_problems(self, grid: int, where: str) -> List[str]:
    """Why `window_size` cannot tile the stages when the first runs on a `grid` x `grid` map."""
    out = []
    for s in range(self.num_stages):
      g = self.stage_grid(s, grid)
      window, _ = layers.block_window(self.window_size, g, True)
      if g < 1 or g % window:
        out.append(f'window_size={self.window_size} does not tile the stage-{s} grid {g}x{g} '
                   f'({where}): use a power of two that divides {self.stage_grid(0, grid)}.')
    return out

  def problems(self) -> List[str]:
    out = []
    n = self.num_stages
    if len(self.num_heads) != n:
      out.append(f'num_heads={self.num_heads} has {len(self.num_heads)} entries but depths='
                 f'{self.depths} has {n}: give one per stage.')
      return out
    out = config_fields.pyramid_problems(self.img_size, self.stride,
                                         [self.stage_dim(s) for s in range(n)], self.num_heads,
                                         self.head_norm)
    if self.img_size % self.stride:
      return out
    return out + self.window_problems(0, f'img_size {self.img_size}')


Config = UMSwinConfig


def config(size: str, **overrides) -> UMSwinConfig:
  """A UM-MAE Swin of a named size from SIZES, with any field overridden."""
  return config_fields.sized(UMSwinConfig, SIZES, ('embed_dim', 'depths', 'num_heads',
                                                   'posmlp_dim'), size, 'UM-MAE Swin', overrides)


RUNLOCAL = dict(img_size=64, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                window_size=4, posmlp_dim=8)
DEMO = dict(img_size=128, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
            window_size=4, posmlp_dim=16)
# Fine-tuning runs window 16 on the full grid and reads fc_norm; probes read the final norm.
CLASSIFIER_FIELDS = dict(window_size=FINETUNE_WINDOW, head_norm='fc_norm')
PROBE_FIELDS = dict(head_norm='norm')


def block_settings(config: UMSwinConfig) -> List[Dict[str, Any]]:
  """Per block (flat over stages): heads, shift parity, merge flag and drop-path rate."""
  rates = np.linspace(0.0, config.drop_path_rate, sum(config.depths)).tolist()
  out = []
  for s, depth in enumerate(config.depths):
    for j in range(depth):
      out.append(dict(num_heads=config.num_heads[s], shifted=j % 2 == 1,
                      merge=s > 0 and j == 0, drop_path=rates[len(out)]))
  return out


class Encoder(nn.Module):
  """UM-MAE's Swin: `patch_embed`, `blocks_{k}`, `norm` (pretraining) / `fc_norm` (head).

  `__call__(images, train)`: [B, H, W, 3] -> final-normed tokens [B, H/32, W/32, F].
  UM-MAE's pretraining calls `embed`, compacts the tokens and their coordinates, then `stages`.
  """
  config: UMSwinConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.patch_embed = layers.PatchEmbed(c.embed_dim, c.patch_size, self.dtype)
    block = layers.UMSwinBlock
    if self.options.remat != 'none':  # (self, x, coords, train): train is static
      block = nn.remat(block, policy=REMAT_POLICIES[self.options.remat], static_argnums=(3,))
    self.blocks = [block(window=c.window_size, mlp_ratio=c.mlp_ratio, posmlp_dim=c.posmlp_dim,
                         dtype=self.dtype, attention=self.options.attention, **settings)
                   for settings in block_settings(c)]
    self.norm = layer_norm(epsilon=layers.NORM_EPS, dtype=jnp.float32)
    self.fc_norm = layer_norm(epsilon=layers.NORM_EPS, dtype=jnp.float32)

  def embed(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> normalized patch embeddings [B, G, G, C]."""
    return self.patch_embed(images)

  def embed_token(self, token: jax.Array) -> jax.Array:
    """A learned token through the patch embedding's LayerNorm, as the patches went."""
    return self.patch_embed.normalize(token)

  def run_blocks(self, x: jax.Array, coords: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, g, g, C]; coords: [1|B, g, g, 2] full-grid (row, col). -> [B, g/8, g/8, F]."""
    for block in self.blocks:
      x, coords = block(x, coords, train)
    return x

  def stages(self, x: jax.Array, coords: jax.Array, train: bool = False) -> jax.Array:
    """Every block, then the final norm."""
    return self.norm(self.run_blocks(x, coords, train))

  def full_grid(self, images: jax.Array, train: bool) -> jax.Array:
    x = self.embed(images)
    return self.run_blocks(x, jnp.asarray(layers.grid_coordinates(x.shape[1])), train)

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.norm(self.full_grid(images, train))

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """[B, F]: the average token after fc_norm (fine-tuning) or the final norm, then average."""
    x = self.full_grid(images, train)
    if self.config.head_norm == 'fc_norm':
      return self.fc_norm(x.mean(axis=(1, 2)))
    return self.norm(x).mean(axis=(1, 2))


# ---- what generic code asks of an encoder (networks/__init__.py) ----

SHAPE_FIELDS = ('embed_dim', 'depths', 'num_heads', 'patch_size', 'in_chans', 'mlp_ratio',
                'posmlp_dim')
NO_WEIGHT_DECAY = frozenset()  # the official fine-tuning exempts only 1-D params (no pos_embed)
SCANS_BLOCKS = False


def is_encoder_param(name: str) -> bool:
  return name in ('patch_embed', 'norm', 'fc_norm') or name.startswith('blocks_')


def num_layer_ids(config: UMSwinConfig) -> int:
  return sum(config.depths) + 1


def layer_id(names: Sequence[str], config: UMSwinConfig) -> int:
  """UM-MAE's `get_layer_id_for_vit` on flat blocks: patch embed 0, block k k + 1 (so a merge
  shares the id of the next stage's first block, which owns it), anything else (norms, head)
  sum(depths) + 1, which trains at the full rate."""
  top = names[0]
  if top == 'patch_embed':
    return 0
  if top.startswith('blocks_'):
    return int(top[len('blocks_'):]) + 1
  return sum(config.depths) + 1


def adapt(params: Dict[str, Any], source: UMSwinConfig,
          target: UMSwinConfig) -> Tuple[Dict[str, Any], UMSwinConfig]:
  """The position MLPs read coordinates, not window slots: every param moves unchanged to any
  input or window size; only the SHAPE_FIELDS must agree."""
  for field in SHAPE_FIELDS:
    if getattr(source, field) != getattr(target, field):
      raise ValueError(f'cannot adapt: {field} differs ({getattr(source, field)} vs '
                       f'{getattr(target, field)}).')
  return dict(params), target


def fixed_buffers(config: UMSwinConfig) -> Dict[str, np.ndarray]:
  """None: the official model keeps its coordinates and masks as plain tensors."""
  del config
  return {}


def forward_flops(config: UMSwinConfig, grid: int = 0) -> Dict[str, float]:
  """Forward FLOPs of the encoder on one image whose first stage runs on `grid` (default the
  full grid; UM-MAE's pretraining passes its compact grid), by part."""
  first = grid or config.grid
  out = {'patch_embed': flops.linear(config.grid**2, config.patch_size**2 * config.in_chans,
                                     config.embed_dim)}
  blocks = merging = posmlp = 0.0
  for s in range(config.num_stages):
    g, dim = config.stage_grid(s, first), config.stage_dim(s)
    window, _ = layers.block_window(config.window_size, g, True)
    blocks += config.depths[s] * flops.transformer_block(g * g, dim, window * window,
                                                         config.mlp_ratio)
    posmlp += config.depths[s] * layers.posmlp_flops(layers.window_count(g, window),
                                                     window * window, config.posmlp_dim,
                                                     config.num_heads[s])
    if s:
      merging += layers.merge_tokens_flops((2 * g)**2, config.stage_dim(s - 1))
  out.update(blocks=blocks, position_mlp=posmlp, patch_merging=merging)
  return out
