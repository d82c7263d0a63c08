"""UM-MAE: uniform masking for MAE pretraining of pyramid encoders (Li et al., arXiv 2205.10063).

Reads like the method (official code implus/UM-MAE, `models_mae_swin.py`, `models_mae_pvt.py`):
  1. per image, *uniform sampling* shows one 16 px unit of every 2x2 group (a quarter of the
     image) and *secondary masking* swaps a quarter of the shown units for a learned token
     (`draw_masks`, `objectives/uniform_masking.py`);
  2. the shown units are gathered into a dense half-size image, their tokens keeping their own
     layout, and the pyramid encoder runs on it, its positions taken from the original grid
     (`encode_compact`): coordinates for UM-MAE's Swin, the gathered sin-cos table for PVT;
  3. the decoder expands the last stage 2x (one token per group), adds sin-cos positions of the
     16x16 unit grid, appends a mask token per hidden unit and predicts 16x16x3 pixels per token
     (`decode`);
  4. the loss is the MSE of norm-pix targets on the units uniform sampling hid
     (`hidden_reconstruction_loss`); secondary-masked units are not in it.
The official decoder gives the shown tokens, which arrive in group order, the position
embeddings of the shown units in raster order instead: most tokens get another unit's position.
`decoder_pos_order='correct'` (default) gives each its own; 'official' reproduces the released
models' numbers. Parameter names follow the official modules (`vis_mask_token`, the encoder's,
`mask_token`, `decoder_embed`, `decoder_blocks_{i}`, `decoder_norm`, `decoder_pred`).
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax import networks
from mixmae_jax.networks import decoder as decoder_lib
from mixmae_jax.networks import flops, pvt, ummae_swin
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.position_embedding import sincos_2d
from mixmae_jax.objectives.contract import RNG_STREAMS, any_batch_size as batch_multiple, concrete  # noqa: F401  (the contract's)
from mixmae_jax.objectives import uniform_masking as um
from mixmae_jax.objectives.patches import (normalize_patches, patchify, pixel_targets,
                                           predicted_images)
from mixmae_jax.networks.layers import Dtype

NAME = 'ummae'
DEFAULT_ENCODER = 'ummae_swin'
ENCODERS = ('ummae_swin', 'pvt')
POS_ORDERS = ('correct', 'official')


@dataclasses.dataclass(frozen=True)
class UMMAEConfig:
  """UM-MAE pretraining model: a pyramid encoder, the decoder and the masking settings."""
  objective: ClassVar[str] = NAME
  encoder: Any = ummae_swin.UMSwinConfig()
  decoder: DecoderConfig = DecoderConfig(depth=2, norm_eps=1e-6)
  unit_size: int = 16  # pixels per mask unit; groups are 2x2 units
  sampling: str = 'balanced'  # 'balanced': the official pool; 'independent': per group
  secondary_ratio: float = 0.25  # share of the shown units replaced by the learned token
  norm_pix_loss: bool = True
  decoder_pos_order: str = 'correct'  # 'official': the released code's (wrong) order

  @property
  def grid(self) -> int:
    """Units per side of the image (16 at 256)."""
    return self.encoder.img_size // self.unit_size

  @property
  def tokens_per_unit(self) -> int:
    return self.unit_size // self.encoder.patch_size

  @property
  def compact_grid(self) -> int:
    """Tokens per side of the compacted image the encoder sees (32 at 256)."""
    return self.grid // 2 * self.tokens_per_unit

  def _shape_problems(self) -> List[str]:
    enc = self.encoder
    if self.unit_size < 1 or self.unit_size % enc.patch_size:
      return [f'objective.unit_size={self.unit_size} must be a multiple of encoder.patch_size='
              f'{enc.patch_size}.']
    if 2 * self.unit_size != enc.stride:
      return [f'objective.unit_size={self.unit_size}: the decoder turns each last-stage token '
              f'into 2x2 units, so a unit must be half the encoder stride ({enc.stride // 2}).']
    if enc.img_size % (2 * self.unit_size):
      return [f'encoder.img_size={enc.img_size} must be a multiple of 2 x unit_size = '
              f'{2 * self.unit_size} (whole 2x2 groups of units).']
    where = f'the compact {self.compact_grid}x{self.compact_grid} pretraining grid'
    if enc.name == 'pvt':
      return ['encoder.' + p for p in enc.sr_problems(self.compact_grid, where)]
    return ['encoder.' + p for p in enc.window_problems(self.compact_grid, where)]

  def problems(self) -> List[str]:
    if self.encoder.name not in ENCODERS:
      return [f'encoder.name={self.encoder.name!r}: UM-MAE runs the encoders whose positions '
              f'follow compacted tokens: use one of {", ".join(ENCODERS)}.']
    out = ['encoder.' + p for p in self.encoder.problems()]
    out += ['objective.' + p for p in self.decoder.problems()]
    if out:
      return out
    out += self._shape_problems()
    if self.sampling not in um.SAMPLINGS:
      out.append(f'objective.sampling={self.sampling!r}: use balanced (official) or '
                 f'independent.')
    if not 0.0 <= self.secondary_ratio < 1.0 or (
        not out and um.num_secondary_kept(self.grid, self.secondary_ratio) < 1):
      out.append(f'objective.secondary_ratio={self.secondary_ratio} must lie in [0, 1) and keep '
                 f'at least one shown unit; UM-MAE uses 0.25.')
    if self.decoder_pos_order not in POS_ORDERS:
      out.append(f'objective.decoder_pos_order={self.decoder_pos_order!r}: use correct or '
                 f'official (the released code\'s order, to reproduce its checkpoints).')
    return out


Config = UMMAEConfig


RUNLOCAL = dict(decoder_dim=64, decoder_depth=1, decoder_num_heads=2)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """[B, h, w, C r^2] -> [B, h r, w r, C], channels split as PyTorch's PixelShuffle (c, i, j)."""
  return einops.rearrange(x, 'b h w (c i j) -> b (h i) (w j) c', i=factor, j=factor)


def hidden_reconstruction_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """MSE over all B x N x P values of the hidden units. pred, target: [B, N, P]."""
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def decoder_positions(hidden: jax.Array, order: str) -> jax.Array:
  """[B, G] units whose decoder position embedding each shown token gets: its own unit (group
  order, 'correct') or the shown units in raster order ('official')."""
  return um.visible_units(hidden) if order == 'correct' else um.visible_units_raster(hidden)


class UMMAE(nn.Module):
  """UM-MAE pretraining model.

  `__call__(images, mask=None, secondary=None, train=False)` with images [B, H, W, 3]
  (normalized), an optional uniform mask [B, g, g] (g = H/16; 1 = hidden, one 0 per 2x2 group)
  and an optional secondary mask [B, g, g] (1 = a shown unit replaced by the token) returns
  {'loss', 'pred': [B, 3G, 16*16*3] predictions of the hidden units in raster order,
  'pred_visible': [B, G, 16*16*3] the decoder's output at the shown units in group order,
  'mask', 'secondary'}. Masks not given are drawn per image from the 'mask' rng.
  """
  config: UMMAEConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    enc = c.encoder
    self.encoder = networks.encoder_module(enc.name).Encoder(enc, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    if c.secondary_ratio > 0:
      self.vis_mask_token = self.param('vis_mask_token', nn.initializers.normal(0.02),
                                       (1, 1, enc.embed_dim))
    self.decoder = decoder_lib.Decoder(c.decoder, c.unit_size**2 * enc.in_chans, self.dtype,
                                       self.options, embed_dim=4 * c.decoder.dim)
    nn.share_scope(self, self.decoder)

  def draw_masks(self, batch: int, hidden: Optional[jax.Array] = None
                 ) -> Tuple[jax.Array, jax.Array]:
    """Uniform mask (unless given) and secondary mask, [B, g, g] each, from the 'mask' rng."""
    c = self.config
    us_rng, sm_rng = jax.random.split(self.make_rng('mask'))
    if hidden is None:
      hidden = um.draw_uniform_mask(us_rng, batch, c.grid, c.sampling)
    return hidden, um.draw_secondary_mask(sm_rng, hidden, c.secondary_ratio)

  def encode_compact(self, images: jax.Array, hidden: jax.Array, secondary: jax.Array,
                     train: bool) -> jax.Array:
    """The shown units, compacted, through the encoder: [B, H, W, 3] -> [B, h, w, F]."""
    c, enc = self.config, self.config.encoder
    k = c.tokens_per_unit
    x = self.encoder.embed(images)  # [B, G, G, C]
    if c.secondary_ratio > 0:
      # Swin normalizes the token as it did the patches; PVT adds positions to it raw.
      token = self.encoder.embed_token(self.vis_mask_token) if enc.name != 'pvt' else \
          self.vis_mask_token
      swapped = um.upsample(secondary, k)[..., None] == 1
      x = jnp.where(swapped, token.astype(x.dtype), x)
    index = um.compaction_index(um.visible_units(hidden), c.grid, k)
    x = um.compact(x, index)
    if enc.name == 'pvt':
      table = self.encoder.position_table()
      return self.encoder.stages(x + um.compact(jnp.broadcast_to(
          table, (x.shape[0],) + table.shape[1:]), index), train)
    return self.encoder.stages(x, um.token_coordinates(index, x.shape[1] * 2), train)

  def decode(self, z: jax.Array, hidden: jax.Array, train: bool) -> Tuple[jax.Array, jax.Array]:
    """[B, h, w, F] -> predictions at the shown units (group order) [B, G, P] and at the hidden
    units (raster order) [B, 3G, P], float32."""
    c = self.config
    x = pixel_shuffle(self.decoder.embed(z), 2)  # [B, g/2, g/2, D]: one token per group
    b, _, _, dim = x.shape
    x = x.reshape(b, -1, dim).astype(jnp.float32)
    table = jnp.asarray(sincos_2d(dim, c.grid, c.grid))
    shown = x + table[decoder_positions(hidden, c.decoder_pos_order)]
    hidden_idx = um.hidden_units(hidden)
    masked = self.decoder.mask_token.astype(jnp.float32) + table[hidden_idx]
    out = self.decoder.predict(jnp.concatenate([shown, masked], axis=1), train)
    return out[:, :x.shape[1]], out[:, x.shape[1]:]

  def __call__(self, images: jax.Array, mask: Optional[jax.Array] = None,
               secondary: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, jax.Array]:
    c = self.config
    if secondary is not None and mask is None:
      raise ValueError('a secondary mask needs the uniform mask it refines: pass mask too.')
    check_masks(mask, secondary, c)
    if secondary is None:
      mask, secondary = self.draw_masks(images.shape[0], mask)
    mask, secondary = jnp.asarray(mask, jnp.int32), jnp.asarray(secondary, jnp.int32)
    z = self.encode_compact(images, mask, secondary, train)
    pred_visible, pred = self.decode(z, mask, train)
    target = pixel_targets(images, c.unit_size, c.norm_pix_loss)
    target = jnp.take_along_axis(target, um.hidden_units(mask)[..., None], axis=1)
    return {'loss': hidden_reconstruction_loss(pred, target), 'pred': pred,
            'pred_visible': pred_visible, 'mask': mask, 'secondary': secondary}


Model = UMMAE


def check_masks(mask, secondary, config: UMMAEConfig) -> None:
  """Explicit masks must obey the laws (checked when not traced): one shown unit per 2x2 group;
  exactly G - kept secondary units, all shown."""
  g = config.grid
  if mask is not None and concrete(mask):
    m = np.asarray(mask)
    groups = m.reshape(len(m), g // 2, 2, g // 2, 2).sum(axis=(2, 4)) if m.shape[1:] == (
        g, g) else None
    if groups is None or np.any(groups != 3):
      raise ValueError(f'mask must be [B, {g}, {g}] with exactly one 0 (shown unit) in every '
                       f'2x2 group; got shape {m.shape}.')
  if secondary is not None and concrete(secondary, mask):
    s, m = np.asarray(secondary), np.asarray(mask)
    count = um.num_groups(g) - um.num_secondary_kept(g, config.secondary_ratio)
    if s.shape != m.shape or np.any(s.reshape(len(s), -1).sum(1) != count) or np.any(s & m):
      raise ValueError(f'secondary must be [B, {g}, {g}] with exactly {count} ones per image, '
                       f'all on shown units (mask == 0).')


# ---- what generic code asks of an objective (objectives/__init__.py) ----

NO_WEIGHT_DECAY = frozenset()  # the official code decays every >= 2-D parameter, tokens included


def full_predictions(images: np.ndarray, out: Dict[str, np.ndarray], config: UMMAEConfig
                     ) -> np.ndarray:
  """[B, g^2, P] in the target space: the prediction at hidden units, the image's own
  (normalized) patches at shown ones, so pictures show the original there."""
  patches = np.asarray(patchify(images, config.unit_size))
  full = np.array(normalize_patches(patches) if config.norm_pix_loss else patches)
  rows = np.arange(len(images))[:, None]
  full[rows, np.asarray(um.hidden_units(jnp.asarray(out['mask'])))] = np.asarray(out['pred'])
  return full


def picture_columns(images: np.ndarray, out: Dict[str, np.ndarray], config: UMMAEConfig
                    ) -> Tuple[Sequence[int], List[Tuple[str, np.ndarray]]]:
  """Columns original | shown units (secondary-masked ones dimmed) | reconstruction of the
  hidden units beside the shown ones."""
  images = np.asarray(images, np.float32)
  unit = np.ones((config.unit_size, config.unit_size))
  hidden = np.kron(np.asarray(out['mask']), unit)[..., None]
  swapped = np.kron(np.asarray(out['secondary']), unit)[..., None]
  shown = images * (1 - hidden) * np.where(swapped == 1, 0.3, 1.0)
  recon = predicted_images(full_predictions(images, out, config), images, config.unit_size,
                           config.norm_pix_loss)
  return range(len(images)), [('original', images), ('shown units', shown),
                              ('reconstruction', recon)]


def encoder_flops(config: UMMAEConfig) -> Dict[str, float]:
  """The encoder on the compact grid (the patch embedding on the whole image)."""
  module = ummae_swin if config.encoder.name == 'ummae_swin' else pvt
  return module.forward_flops(config.encoder, grid=config.compact_grid)


def flops_per_image(config: UMMAEConfig) -> Dict[str, float]:
  """The encoder on the compact quarter; the decoder embeds the last stage to 4 x width and runs
  every unit (shown and hidden) through its blocks and pixel head."""
  enc = config.encoder
  last = (config.compact_grid // 2**(enc.num_stages - 1))**2
  decoder = decoder_lib.forward_flops(config.decoder, embedded=4 * last, sequences=1,
                                      length=config.grid**2, in_dim=enc.num_features,
                                      out_dim=config.unit_size**2 * enc.in_chans)
  return flops.with_totals(encoder_flops(config), decoder)


def fixed_buffers(config: UMMAEConfig) -> Dict[str, np.ndarray]:
  """The official model's non-trainable tensors: the decoder's sin-cos table (and PVT's)."""
  enc = config.encoder
  return {**networks.encoder_module(enc.name).fixed_buffers(enc),
          'decoder_pos_embed': sincos_2d(config.decoder.dim, config.grid, config.grid)[None]}
