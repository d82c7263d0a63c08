"""The Swin encoder family: MixMIM's Swin (large windows, no shift) and the standard Swin.

The standard Swin of SimMIM is `shifted_windows=True, abs_pos_embed=False,
finetune_rules='simmim'`; MixMIM's is the default.

An encoder module (see `networks/__init__.py` for the contract) with the size table, the frozen
architecture config, the Flax `Encoder`, and what generic code asks of an encoder: which params
are the encoder's, layer-decay ids, moving to another input or window size, the official
checkpoints' fixed buffers and FLOPs. The building blocks are in `swin_layers.py`.

Parameter names follow the official PyTorch modules: `patch_embed/{proj,norm}`,
`layers_{i}/blocks_{j}/...`, `layers_{i}/downsample`, `norm`.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import block_scan, config_fields, flops, resolution
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.layers import Dtype, layer_norm
from mixmae_jax.networks.position_embedding import sincos_2d
from mixmae_jax.networks.swin_layers import (PatchEmbed, ScannedSwinStage, SwinStage, block_shifts,
                                             relative_position_index, scan_period,
                                             shift_regions)

NAME = 'swin'

# MixMIM Swin sizes (the MixMIM paper's model variants). Depths are shared by all published sizes
# except tiny, which is the standard Swin-T layout used by demos and tests.
SIZES = {
    #        embed_dim  depths          num_heads
    'tiny': (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    'base': (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    'large': (192, (2, 2, 18, 2), (6, 12, 24, 48)),
    'huge': (352, (2, 2, 18, 2), (11, 22, 44, 88)),
}
MIXMIM_WINDOWS_224 = (14, 14, 14, 7)
MIXMIM_WINDOWS_384 = (16, 16, 24, 12)
FINETUNE_RULES = ('mixmim', 'simmim')


@dataclasses.dataclass(frozen=True)
class SwinConfig:
  """A (MixMIM) Swin encoder. `window_sizes` are per stage and clipped to the stage grid."""
  name: ClassVar[str] = NAME
  img_size: int = 224
  patch_size: int = 4
  in_chans: int = 3
  embed_dim: int = 128
  depths: Tuple[int, ...] = (2, 2, 18, 2)
  num_heads: Tuple[int, ...] = (4, 8, 16, 32)
  window_sizes: Tuple[int, ...] = MIXMIM_WINDOWS_224
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  shifted_windows: bool = False  # False: MixMIM (no shift); True: standard Swin
  drop_path_rate: float = 0.0
  # Grid the fixed sin-cos position table was made on; 0 = the patch grid. Another value means
  # the table was made there and bicubically resized to this encoder's grid, as the official
  # fine-tuning does when it moves a 224 checkpoint to 384 (see `adapt`).
  pos_embed_grid: int = 0
  abs_pos_embed: bool = True  # MixMIM's fixed sin-cos table; the standard Swin has none
  # Whose official fine-tuning conventions apply (FINETUNE_RULES): which layer id a patch
  # merging and the head get, which params are exempt from weight decay, and how bias tables
  # are resized to new windows.
  finetune_rules: str = 'mixmim'

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def stride(self) -> int:
    """Output stride of the last stage in pixels (32 for four stages of patch 4)."""
    return self.patch_size * 2 ** (self.num_stages - 1)

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (self.num_stages - 1)

  def stage_grid(self, stage: int) -> int:
    return self.img_size // self.patch_size // 2 ** stage

  def stage_dim(self, stage: int) -> int:
    return self.embed_dim * 2 ** stage

  def stage_window(self, stage: int) -> int:
    """Window size actually used by a stage: the configured one, clipped to the grid."""
    return min(self.window_sizes[stage], self.stage_grid(stage))

  def problems(self) -> List[str]:
    """Every reason this encoder cannot be built, as messages naming the field and the fix."""
    out = []
    n = self.num_stages
    for name in ('num_heads', 'window_sizes'):
      if len(getattr(self, name)) != n:
        out.append(f'{name}={getattr(self, name)} has {len(getattr(self, name))} entries but '
                   f'depths={self.depths} has {n}: give one value per stage.')
    if self.finetune_rules not in FINETUNE_RULES:
      out.append(f'finetune_rules={self.finetune_rules!r}: use mixmim or simmim (whose official '
                 f'layer ids, weight-decay exemptions and bias-table resizing apply).')
    if self.img_size % self.stride:
      out.append(f'img_size={self.img_size} is not a multiple of the encoder stride {self.stride}'
                 f' (patch_size {self.patch_size} x 2^{n - 1}): use e.g. '
                 f'{max(self.stride, self.img_size // self.stride * self.stride)}.')
      return out
    for s in range(min(n, len(self.num_heads), len(self.window_sizes))):
      dim, heads, grid, win = self.stage_dim(s), self.num_heads[s], self.stage_grid(s), \
          self.stage_window(s)
      if dim % heads:
        out.append(f'num_heads[{s}]={heads} does not divide the stage-{s} width {dim}.')
      if grid % win:
        divisors = [d for d in range(1, grid + 1) if grid % d == 0]
        out.append(f'window_sizes[{s}]={self.window_sizes[s]} does not divide the stage-{s} '
                   f'grid {grid}x{grid} (img_size {self.img_size}): pick one of {divisors}.')
    return out


Config = SwinConfig


def config(size: str, **overrides) -> SwinConfig:
  """A Swin encoder of a named size from SIZES, with any field overridden."""
  return config_fields.sized(SwinConfig, SIZES, ('embed_dim', 'depths', 'num_heads'), size,
                             'Swin', overrides)


# SimMIM's standard Swin: shifted windows, no absolute position embedding, SimMIM's rules.
STANDARD = dict(shifted_windows=True, abs_pos_embed=False, finetune_rules='simmim')


# What `:runlocal` configs shrink the encoder to: the same family at toy size, for a CPU.
RUNLOCAL = dict(img_size=64, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                window_sizes=(4, 4, 4, 2))


# The demos' encoder (configs/demo.py and the demo fine-tuning): 128 px, a 4x4 mixing grid.
DEMO = dict(img_size=128, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
            window_sizes=(8, 8, 8, 4))
# What a classifier changes in `fields` (fine-tuning), and what a linear probe changes on top.
CLASSIFIER_FIELDS = {}
PROBE_FIELDS = {}


def drop_path_rates(config: SwinConfig) -> List[List[float]]:
  """Stochastic depth rising linearly from 0 to drop_path_rate over all blocks, per stage."""
  rates = np.linspace(0.0, config.drop_path_rate, sum(config.depths)).tolist()
  starts = np.cumsum((0,) + tuple(config.depths))
  return [rates[starts[s]:starts[s + 1]] for s in range(config.num_stages)]


def make_stages(config: SwinConfig, dtype: Dtype,
                options: ComputeOptions = ComputeOptions()) -> List[nn.Module]:
  """The stage modules of an encoder, to be assigned to `self.layers` in a `setup`.

  With `options.scan_blocks`, a stage of two or more repeats is a `ScannedSwinStage` whose
  params are stored per block, exactly as the unrolled `SwinStage` stores them, or with
  `options.stacked_params` in the scan's stacked layout (`block_scan.py`).
  """
  rates = drop_path_rates(config)
  stages = []
  for s in range(config.num_stages):
    depth, window = config.depths[s], config.stage_window(s)
    stage_fields = dict(depth=depth, num_heads=config.num_heads[s], window=window,
                        shifted_windows=config.shifted_windows, mlp_ratio=config.mlp_ratio,
                        qkv_bias=config.qkv_bias, drop_paths=tuple(rates[s]),
                        downsample=s < config.num_stages - 1, dtype=dtype,
                        attention=options.attention, remat=options.remat)
    period = scan_period(block_shifts(depth, window, config.stage_grid(s),
                                      config.shifted_windows))
    if options.scan_blocks and depth % period == 0 and depth // period >= 2:
      stage = ScannedSwinStage if options.stacked_params else block_scan.per_block_layout(
          ScannedSwinStage, depth, period)
      stages.append(stage(**stage_fields))
    else:
      stages.append(SwinStage(**stage_fields))
  return stages


def absolute_position_embedding(config: SwinConfig) -> jax.Array:
  """[1, G, G, C] fixed sin-cos embedding on the patch grid (G = img_size / patch_size).

  With `config.pos_embed_grid` set, the table is made on that grid and resized bicubically.
  """
  g = config.stage_grid(0)
  source = config.pos_embed_grid or g
  table = sincos_2d(config.embed_dim, source, source).reshape(source, source, -1)
  if source != g:
    table = resolution.bicubic_resize(table, g, g)
  return jnp.asarray(table[None])


class Encoder(nn.Module):
  """The Swin encoder: `patch_embed`, `layers_{i}`, `norm`.

  `__call__(images, train)`: images [B, H, W, 3] (normalized) -> the final normalized tokens
  [B, H/stride, W/stride, num_features]. Objectives that change tokens between the patch
  embedding and the stages (mixing, masking) call `embed` and `stages` themselves.
  """
  config: SwinConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.patch_embed = PatchEmbed(c.embed_dim, c.patch_size, self.dtype)
    self.layers = make_stages(c, self.dtype, self.options)
    self.norm = layer_norm(dtype=jnp.float32)

  def embed(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> patch embeddings [B, G, G, C], without the position embedding."""
    return self.patch_embed(images)

  def position_embedding(self) -> jax.Array:
    """[1, G, G, C] fixed sin-cos table, added after the patch embedding (and any mixing);
    [1, 1, 1, C] zeros for a Swin without one."""
    if not self.config.abs_pos_embed:
      return jnp.zeros((1, 1, 1, self.config.embed_dim), jnp.float32)
    return absolute_position_embedding(self.config)

  def stages(self, x: jax.Array, sources: Optional[Sequence[jax.Array]] = None,
             train: bool = False) -> jax.Array:
    """Every stage, each with its own source map (or none), then the final norm.

    x: [B, G, G, C]; sources[s]: [G_s, G_s] or [B, G_s, G_s] slot ids. -> [B, g, g, F].
    """
    for s, stage in enumerate(self.layers):
      x = stage(x, None if sources is None else sources[s], train)
    return self.norm(x)

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    return self.stages(self.embed(images) + self.position_embedding(), None, train)

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Pooled features [B, F] for a classifier head: the final norm, then the average."""
    return self(images, train).mean(axis=(1, 2))


# ---- what generic code asks of an encoder (networks/__init__.py) ----

# Fields a pretrained encoder fixes; the others (input and window size, shifts, drop path) are a
# fine-tuning config's to choose, and `adapt` moves the params to them.
SHAPE_FIELDS = ('embed_dim', 'depths', 'num_heads', 'patch_size', 'in_chans', 'mlp_ratio',
                'qkv_bias')
# Fine-tuning exempts only 1-D params from weight decay (MixMIM decays the bias tables);
# under SimMIM's rules `no_weight_decay` adds the bias tables (and an absolute table).
NO_WEIGHT_DECAY = frozenset()
SIMMIM_NO_WEIGHT_DECAY = frozenset({'relative_position_bias_table', 'absolute_pos_embed'})
SCANS_BLOCKS = True  # `model.scan_blocks` runs a stage's repeated blocks as one loop


def is_encoder_param(name: str) -> bool:
  """Whether a top-level params entry belongs to the encoder."""
  return name in ('patch_embed', 'norm') or name.startswith('layers_')


def num_layer_ids(config: SwinConfig) -> int:
  """Layer ids run 0..sum(depths); a parameter's lr scale is decay ** (this - its id)."""
  return sum(config.depths) + 1


def layer_id(names: Sequence[str], config: SwinConfig) -> int:
  """MixMIM's `get_layer_id_for_mixmim`: patch embed 0, block j of stage s
  sum(depths[:s]) + j + 1, a stage's patch merging the id of the next stage's first block,
  anything else (final norm, head) sum(depths), the id of the last block.

  Under SimMIM's rules (`get_swin_layer`) a patch merging shares the id of the last block of
  its own stage, and anything else gets sum(depths) + 1, which trains at the full rate.
  """
  depths, top = config.depths, names[0]
  simmim = config.finetune_rules == 'simmim'
  if top in ('patch_embed', 'mask_token'):
    return 0
  if top.startswith('layers_'):
    stage = int(top[len('layers_'):])
    if names[1] == 'downsample':
      return sum(depths[:stage + 1]) + (0 if simmim else 1)
    return sum(depths[:stage]) + int(names[1][len('blocks_'):]) + 1
  return sum(depths) + (1 if simmim else 0)


def no_weight_decay(config: SwinConfig) -> frozenset:
  """Params fine-tuning leaves undecayed besides the 1-D ones, by the config's rules."""
  return SIMMIM_NO_WEIGHT_DECAY if config.finetune_rules == 'simmim' else NO_WEIGHT_DECAY


def adapt(params: Dict[str, Any], source: SwinConfig,
          target: SwinConfig) -> Tuple[Dict[str, Any], SwinConfig]:
  """Encoder params and config moved from `source`'s input/window size to `target`'s.

  Every relative position bias table is resized to the target windows (bicubically as
  MixMIM does, or by SimMIM's geometric interpolation under the target's SimMIM rules), and
  `pos_embed_grid` is set so the absolute embedding is the source's resized, as the official
  fine-tuning loads it. Other params are shared unchanged; the SHAPE_FIELDS must agree.
  """
  for field in SHAPE_FIELDS:
    if getattr(source, field) != getattr(target, field):
      raise ValueError(f'cannot adapt: {field} differs ({getattr(source, field)} vs '
                       f'{getattr(target, field)}); only img_size and window_sizes may.')
  out = dict(params)
  resize_table = resolution.geometric_resize_bias_table if \
      target.finetune_rules == 'simmim' else resolution.resize_bias_table
  for s in range(target.num_stages):
    stage = dict(out[f'layers_{s}'])
    for j in range(target.depths[s]):
      block = dict(stage[f'blocks_{j}'])
      attn = dict(block['attn'])
      attn['relative_position_bias_table'] = resize_table(
          np.asarray(attn['relative_position_bias_table']), target.stage_window(s))
      block['attn'] = attn
      stage[f'blocks_{j}'] = block
    out[f'layers_{s}'] = stage
  source_grid = source.pos_embed_grid or source.stage_grid(0)
  own = source_grid == target.stage_grid(0)
  return out, dataclasses.replace(target, pos_embed_grid=0 if own else source_grid)


def fixed_buffers(config: SwinConfig) -> Dict[str, np.ndarray]:
  """The non-trainable tensors an official model carries, by their PyTorch names: MixMIM's
  sin-cos table, the relative position indices and, in shifted blocks (standard Swin), the
  cross-region mask (0 / -100)."""
  out = {}
  if config.abs_pos_embed:
    out['absolute_pos_embed'] = np.asarray(absolute_position_embedding(config)).reshape(
        1, config.stage_grid(0)**2, config.embed_dim)
  for s in range(config.num_stages):
    window, grid = config.stage_window(s), config.stage_grid(s)
    index = relative_position_index(window).astype(np.int64)
    shifts = block_shifts(config.depths[s], window, grid, config.shifted_windows)
    for j in range(config.depths[s]):
      out[f'layers.{s}.blocks.{j}.attn.relative_position_index'] = index
      if shifts[j]:
        regions = shift_regions(grid, window, shifts[j])
        out[f'layers.{s}.blocks.{j}.attn_mask'] = np.where(
            regions[:, :, None] == regions[:, None, :], 0.0, -100.0).astype(np.float32)
  return out


def forward_flops(config: SwinConfig) -> Dict[str, float]:
  """Forward FLOPs of the encoder on one whole image, by part (attention over whole windows)."""
  tokens0 = config.stage_grid(0)**2
  out = {'patch_embed': flops.linear(tokens0, config.patch_size**2 * config.in_chans,
                                     config.embed_dim)}
  blocks = merging = 0.0
  for s in range(config.num_stages):
    tokens, dim, window = config.stage_grid(s)**2, config.stage_dim(s), config.stage_window(s)
    blocks += config.depths[s] * flops.transformer_block(tokens, dim, window * window,
                                                         config.mlp_ratio)
    if s < config.num_stages - 1:  # LayerNorm(4C) then Linear(4C -> 2C) on tokens / 4
      merging += flops.linear(tokens // 4, 4 * dim, 2 * dim)
  out.update(blocks=blocks, patch_merging=merging)
  return out
