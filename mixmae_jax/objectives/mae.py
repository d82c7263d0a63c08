"""MAE: masked autoencoders on a plain ViT (He et al., arXiv 2111.06377), the baseline.

Reads like the method (facebookresearch/mae `models_mae.py`):
  1. per image, remove a random 75% of the patches: rank uniform noise and keep exactly
     int(L x 0.25) (`random_masking`; static shapes);
  2. the encoder sees the visible patches only, with their positions and a cls token
     (`encode_visible`);
  3. the decoder puts a mask token at every removed patch, adds its own sin-cos positions (cls slot
     included) and predicts every patch's pixels (`decode`);
  4. the loss is the MSE of norm-pix targets (unbiased variance) on removed patches only
     (`masked_reconstruction_loss`).
Visible tokens enter the encoder in raster order rather than MAE's noise order: without masks or
position-dependent ops between tokens, the encoder is permutation-equivariant, so the
predictions are the same.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import decoder as decoder_lib
from mixmae_jax.networks import flops, vit
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.contract import RNG_STREAMS, any_batch_size as batch_multiple, concrete  # noqa: F401  (the contract's)
from mixmae_jax.objectives.patches import (masked_reconstruction_loss, pixel_targets,
                                           predicted_images)
from mixmae_jax.networks.layers import Dtype

NAME = 'mae'
DEFAULT_ENCODER = 'vit'


@dataclasses.dataclass(frozen=True)
class MAEConfig:
  """MAE pretraining model: ViT encoder, decoder, mask ratio and target normalization."""
  objective: ClassVar[str] = NAME
  encoder: Any = vit.ViTConfig()
  decoder: DecoderConfig = DecoderConfig(norm_eps=1e-6)
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True

  @property
  def num_kept(self) -> int:
    """Visible patches per image: int(L x (1 - mask_ratio)), as the official code computes it."""
    return int(self.encoder.num_patches * (1 - self.mask_ratio))

  def problems(self) -> List[str]:
    if self.encoder.name != 'vit':
      return [f'encoder.name={self.encoder.name!r}: MAE drops tokens, which needs a plain ViT; '
              f'use vit.']
    out = ['encoder.' + p for p in self.encoder.problems()]
    out += ['objective.' + p for p in self.decoder.problems()]
    if not 0.0 < self.mask_ratio < 1.0:
      out.append(f'objective.mask_ratio={self.mask_ratio} must lie in (0, 1); MAE uses 0.75.')
    elif not out and not 0 < self.num_kept < self.encoder.num_patches:
      out.append(f'objective.mask_ratio={self.mask_ratio} keeps int({self.encoder.num_patches} x '
                 f'{1 - self.mask_ratio:g}) = {self.num_kept} of {self.encoder.num_patches} '
                 f'patches: at least one must be kept and one removed.')
    return out


Config = MAEConfig


RUNLOCAL = dict(decoder_dim=64, decoder_depth=1, decoder_num_heads=2)


def random_masking(rng: jax.Array, batch: int, length: int, num_kept: int) -> jax.Array:
  """[B, L] int32, 1 = removed: per image the patches of the `num_kept` lowest noise values stay."""
  noise = jax.random.uniform(rng, (batch, length))
  ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  return (ranks >= num_kept).astype(jnp.int32)


def shuffle_order(mask: jax.Array) -> jax.Array:
  """[B, L] positions, the visible ones first (raster order), then the removed ones."""
  return jnp.argsort(mask, axis=1, stable=True)


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, L, D] at per-row positions index [B, N] -> [B, N, D]."""
  return jnp.take_along_axis(x, index[..., None], axis=1)


class MAE(nn.Module):
  """MAE pretraining model.

  `__call__(images, mask=None, train=False)` with images [B, H, W, 3] (normalized) and an
  optional mask [B, L] (L = (H / patch)^2, 1 = removed, exactly L - int(L x (1 - ratio)) ones per
  row) returns {'loss': scalar, 'pred': [B, L, patch^2 x 3] in raster order, 'mask': [B, L]}.
  Without `mask`, one per image is drawn from the 'mask' rng.
  """
  config: MAEConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    enc = self.config.encoder
    self.encoder = vit.Encoder(enc, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    self.decoder = decoder_lib.Decoder(self.config.decoder, enc.patch_size**2 * enc.in_chans,
                                       self.dtype, self.options)
    nn.share_scope(self, self.decoder)

  def encode_visible(self, images: jax.Array, order: jax.Array, train: bool) -> jax.Array:
    """The cls token and the visible patches through the encoder: [B, 1 + K, D]."""
    x = self.encoder.embed(images)  # [B, L, D], positions added before any patch is dropped
    x = _take(x, order[:, :self.config.num_kept])
    return self.encoder.encode(self.encoder.with_cls(x), train)

  def decode(self, latent: jax.Array, order: jax.Array, train: bool) -> jax.Array:
    """[B, 1 + K, D] encoder output -> predictions [B, L, P] for every patch, raster order."""
    x = self.decoder.embed(latent)
    b, length, dim = x.shape[0], order.shape[1], x.shape[-1]
    tokens = jnp.broadcast_to(self.decoder.mask_token.astype(x.dtype),
                              (b, length - self.config.num_kept, dim))
    restore = jnp.argsort(order, axis=1)  # unshuffle: visible then removed -> raster
    x_ = _take(jnp.concatenate([x[:, 1:], tokens], axis=1), restore)
    x = jnp.concatenate([x[:, :1], x_], axis=1).astype(jnp.float32)
    x = x + jnp.asarray(vit.sincos_table(self.config.decoder.dim, self.config.encoder.grid))
    return self.decoder.predict(x, train)[:, 1:]

  def __call__(self, images: jax.Array, mask: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, jax.Array]:
    enc, b = self.config.encoder, images.shape[0]
    if mask is None:
      mask = random_masking(self.make_rng('mask'), b, enc.num_patches, self.config.num_kept)
    _check_mask(mask, self.config)
    mask = jnp.asarray(mask, jnp.int32)
    order = shuffle_order(mask)
    pred = self.decode(self.encode_visible(images, order, train), order, train)
    target = pixel_targets(images, enc.patch_size, self.config.norm_pix_loss)
    return {'loss': masked_reconstruction_loss(pred, target, mask), 'pred': pred, 'mask': mask}


Model = MAE


def _check_mask(mask, config: MAEConfig) -> None:
  """An explicit mask must remove exactly L - K patches per image (checked when not traced)."""
  if not concrete(mask):
    return
  mask = np.asarray(mask)
  removed = config.encoder.num_patches - config.num_kept
  if mask.ndim != 2 or mask.shape[1] != config.encoder.num_patches or \
      np.any(mask.sum(axis=1) != removed):
    raise ValueError(f'mask must be [B, {config.encoder.num_patches}] with exactly {removed} '
                     f'ones (removed patches) per row; got shape {mask.shape} and row sums '
                     f'{sorted(set(mask.reshape(len(mask), -1).sum(axis=1).tolist()))}.')


# ---- what generic code asks of an objective (objectives/__init__.py) ----

NO_WEIGHT_DECAY = frozenset()  # MAE decays every >= 2-D parameter, cls and mask tokens included


def picture_columns(images: np.ndarray, out: Dict[str, np.ndarray], config: MAEConfig
                    ) -> Tuple[Sequence[int], List[Tuple[str, np.ndarray]]]:
  """Columns original | masked input | reconstruction | reconstruction + visible (MAE's demo)."""
  images = np.asarray(images, np.float32)
  enc = config.encoder
  grid = np.asarray(out['mask']).reshape(-1, enc.grid, enc.grid)
  hidden = np.kron(grid, np.ones((enc.patch_size, enc.patch_size)))[..., None]
  recon = predicted_images(out['pred'], images, enc.patch_size, config.norm_pix_loss)
  return range(len(images)), [('original', images), ('masked input', images * (1 - hidden)),
                              ('reconstruction', recon),
                              ('recon + visible', np.where(hidden == 1, recon, images))]


def flops_per_image(config: MAEConfig) -> Dict[str, float]:
  """The encoder on 1 + K tokens (patch embedding of all L), the decoder on 1 + L."""
  enc = config.encoder
  encoder = vit.forward_flops(enc, tokens=1 + config.num_kept)
  decoder = decoder_lib.forward_flops(config.decoder, embedded=1 + config.num_kept, sequences=1,
                                      length=1 + enc.num_patches, in_dim=enc.embed_dim,
                                      out_dim=enc.patch_size**2 * enc.in_chans)
  return flops.with_totals(encoder, decoder)


def fixed_buffers(config: MAEConfig) -> Dict[str, np.ndarray]:
  """The non-trainable tensors of the official `MaskedAutoencoderViT`, by their PyTorch names."""
  return {**vit.fixed_buffers(config.encoder),
          'decoder_pos_embed': vit.sincos_table(config.decoder.dim, config.encoder.grid)}
