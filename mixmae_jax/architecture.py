"""Architecture descriptions: the size table and the frozen configs models are built from.

A checkpoint stores `asdict(arch)` as JSON, so every field here is plain data and a model can be
rebuilt from a checkpoint alone (`arch_from_dict`).
"""
import dataclasses
from typing import Any, Mapping, Optional, Tuple

# MixMIM Swin sizes (SPEC section 2). Depths are shared by all published sizes except tiny,
# which is the standard Swin-T layout used by demos and tests.
SWIN_SIZES = {
    #        embed_dim  depths          num_heads
    'tiny': (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    'base': (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    'large': (192, (2, 2, 18, 2), (6, 12, 24, 48)),
    'huge': (352, (2, 2, 18, 2), (11, 22, 44, 88)),
}
MIXMIM_WINDOWS_224 = (14, 14, 14, 7)
MIXMIM_WINDOWS_384 = (16, 16, 24, 12)


@dataclasses.dataclass(frozen=True)
class SwinConfig:
  """A (MixMIM) Swin encoder. `window_sizes` are per stage and clipped to the stage grid."""
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
  # fine-tuning does when it moves a 224 checkpoint to 384 (see resolution.py).
  pos_embed_grid: int = 0

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

  def problems(self) -> list:
    """Every reason this encoder cannot be built, as messages naming the field and the fix."""
    out = []
    n = self.num_stages
    for name in ('num_heads', 'window_sizes'):
      if len(getattr(self, name)) != n:
        out.append(f'{name}={getattr(self, name)} has {len(getattr(self, name))} entries but '
                   f'depths={self.depths} has {n}: give one value per stage.')
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


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The ViT decoder shared by the pretraining objectives."""
  dim: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0

  def problems(self) -> list:
    if self.dim % self.num_heads:
      return [f'decoder_num_heads={self.num_heads} does not divide decoder_dim={self.dim}.']
    return []


@dataclasses.dataclass(frozen=True)
class MixMAEConfig:
  """MixMAE pretraining model: encoder, decoder and the mixing/loss settings."""
  encoder: SwinConfig = SwinConfig()
  decoder: DecoderConfig = DecoderConfig()
  mask_ratio: float = 0.5
  range_mask_ratio: float = 0.0
  norm_pix_loss: bool = True
  mix_embedding: bool = False  # the paper's ablation: a learned embedding per source slot

  def problems(self) -> list:
    out = self.encoder.problems() + self.decoder.problems()
    if not 0.0 < self.mask_ratio < 1.0:
      out.append(f'mask_ratio={self.mask_ratio} must lie in (0, 1); MixMAE uses 0.5.')
    elif not 0.0 <= self.range_mask_ratio < 1.0 - self.mask_ratio:
      out.append(f'range_mask_ratio={self.range_mask_ratio} must lie in [0, 1 - mask_ratio) = '
                 f'[0, {1.0 - self.mask_ratio:g}); the default is 0.')
    return out


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """A Swin encoder with the fine-tuning head (final norm, average pool, linear)."""
  encoder: SwinConfig = SwinConfig()
  num_classes: int = 1000

  def problems(self) -> list:
    out = self.encoder.problems()
    if self.num_classes < 1:
      out.append(f'num_classes={self.num_classes} must be at least 1.')
    return out


def swin_config(size: str, **overrides) -> SwinConfig:
  """A Swin encoder of a named size from SWIN_SIZES, with any field overridden."""
  if size not in SWIN_SIZES:
    raise ValueError(f'unknown Swin size {size!r}; choose one of {sorted(SWIN_SIZES)}.')
  embed_dim, depths, num_heads = SWIN_SIZES[size]
  fields = dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads)
  fields.update(overrides)
  return SwinConfig(**fields)


_ARCH_KINDS = {'mixmae': MixMAEConfig, 'classifier': ClassifierConfig}


def arch_to_dict(arch) -> dict:
  """A JSON-ready description of an architecture, with its kind."""
  kind = {cls: name for name, cls in _ARCH_KINDS.items()}[type(arch)]
  return {'kind': kind, **dataclasses.asdict(arch)}


def arch_from_dict(d: Mapping[str, Any]):
  """Inverse of `arch_to_dict` (lists from JSON become tuples)."""
  d = dict(d)
  cls = _ARCH_KINDS[d.pop('kind')]
  return _build(cls, d)


def _build(cls, d: Mapping[str, Any]):
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name not in d:
      continue
    v = d[f.name]
    if dataclasses.is_dataclass(f.default):
      v = _build(type(f.default), v)
    elif isinstance(v, list):
      v = tuple(v)
    kwargs[f.name] = v
  return cls(**kwargs)


def check(arch, what: Optional[str] = None) -> None:
  """Raise ValueError listing every problem of an architecture."""
  problems = arch.problems()
  if problems:
    head = f'invalid {what or type(arch).__name__}:'
    raise ValueError('\n  '.join([head] + problems))


def swin_arch(m) -> SwinConfig:
  """A SwinConfig from the encoder fields of a config's `model` (config_defaults.encoder_fields)."""
  return SwinConfig(
      img_size=m.img_size, patch_size=m.patch_size, embed_dim=m.embed_dim,
      depths=tuple(m.depths), num_heads=tuple(m.num_heads), window_sizes=tuple(m.window_sizes),
      mlp_ratio=m.mlp_ratio, shifted_windows=m.shifted_windows,
      drop_path_rate=m.drop_path_rate)


def mixmae_arch(m) -> MixMAEConfig:
  """A MixMAEConfig from the `model` fields of a training config (see config_defaults.py)."""
  encoder = swin_arch(m)
  decoder = DecoderConfig(dim=m.decoder_dim, depth=m.decoder_depth,
                          num_heads=m.decoder_num_heads, mlp_ratio=m.mlp_ratio)
  return MixMAEConfig(encoder=encoder, decoder=decoder, mask_ratio=m.mask_ratio,
                      range_mask_ratio=m.range_mask_ratio, norm_pix_loss=m.norm_pix_loss,
                      mix_embedding=m.mix_embedding)
