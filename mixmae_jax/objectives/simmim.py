"""SimMIM: simple masked image modelling on a hierarchical encoder (Xie et al., arXiv 2111.09886).

Reads like the method (official code microsoft/SimMIM, `models/simmim.py`):
  1. per image, mask a random ceil(L x 0.6) of the 32 px units (`random_unit_mask`);
  2. after the patch embedding (and its LayerNorm) a learned `mask_token` replaces every token
     of a masked unit, and the encoder runs on the whole image (`encode_masked`): the cost
     MixMAE and UM-MAE avoid;
  3. a one-layer decoder maps each last-stage token to the pixels of its 32x32 cell: Conv1x1
     (C -> 32*32*3) and a 32x pixel shuffle (`decode`);
  4. the loss is the L1 distance to the normalized image on masked pixels only,
     sum / (masked pixels + 1e-5) / 3 (`masked_l1_loss`).
The encoder is the standard Swin (shifted windows, no absolute position embedding: `swin`
with `swin.STANDARD`). UM-MAE's SimMIM baseline is also here: its own Swin (`ummae_swin` on the
full grid, window 16), 256 px input, 16 px units at ratio 0.75 and a decoder Linear(C -> 4 x
16*16*3) + 2x pixel shuffle into one 16 px patch per sub-token (`decoder='linear'`).
Parameter names follow the official modules: the encoder's, `mask_token`, `decoder/0` (SimMIM's
`decoder.0` conv; interop adds the `encoder.` prefix of its checkpoints) or `decoder_pred`
(UM-MAE's variant).
"""
import dataclasses
import math
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax import networks
from mixmae_jax.networks import flops, swin
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.layers import Dtype, dense, trunc_normal_init
from mixmae_jax.networks.ummae_swin_layers import Conv1x1, grid_coordinates
from mixmae_jax.objectives.contract import RNG_STREAMS, any_batch_size as batch_multiple, concrete  # noqa: F401  (the contract's)
from mixmae_jax.objectives.patches import unpatchify

NAME = 'simmim'
DEFAULT_ENCODER = 'swin'
ENCODERS = ('swin', 'ummae_swin')
DECODERS = ('conv', 'linear')
L1_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class SimMIMConfig:
  """SimMIM pretraining model: a hierarchical encoder that sees mask tokens, a linear decoder."""
  objective: ClassVar[str] = NAME
  encoder: Any = swin.config('base', img_size=192, window_sizes=(6, 6, 6, 6), **swin.STANDARD)
  unit_size: int = 32  # pixels per mask unit
  mask_ratio: float = 0.6
  # 'conv': Conv1x1(C -> stride^2 x 3) + pixel shuffle by the stride (SimMIM); 'linear':
  # Linear(C -> stride^2 x 3) + pixel shuffle 2 into (stride/2)^2 x 3 patches (UM-MAE's SimMIM).
  decoder: str = 'conv'

  @property
  def grid(self) -> int:
    """Units per side."""
    return self.encoder.img_size // self.unit_size

  @property
  def num_masked(self) -> int:
    """ceil(L x ratio), as SimMIM's MaskGenerator counts (22 of 36 at 192, 30 of 49 at 224)."""
    return int(math.ceil(self.grid**2 * self.mask_ratio))

  def problems(self) -> List[str]:
    enc = self.encoder
    if enc.name not in ENCODERS:
      return [f'encoder.name={enc.name!r}: SimMIM puts mask tokens into a hierarchical encoder '
              f'that sees every token: use one of {", ".join(ENCODERS)}.']
    out = ['encoder.' + p for p in enc.problems()]
    if self.decoder not in DECODERS:
      out.append(f'objective.decoder={self.decoder!r}: use conv (SimMIM) or linear (UM-MAE\'s '
                 f'SimMIM).')
    if self.unit_size < 1 or self.unit_size % enc.patch_size or enc.img_size % self.unit_size:
      out.append(f'objective.unit_size={self.unit_size} must be a multiple of encoder.patch_size'
                 f'={enc.patch_size} and divide encoder.img_size={enc.img_size}.')
    elif not 0.0 < self.mask_ratio < 1.0 or not 0 < self.num_masked < self.grid**2:
      out.append(f'objective.mask_ratio={self.mask_ratio} must mask at least one of the '
                 f'{self.grid**2} units and leave one (SimMIM uses 0.6).')
    if not out and enc.name == 'swin' and enc.abs_pos_embed:
      out.append('encoder.abs_pos_embed=True: SimMIM\'s Swin has no absolute position '
                 'embedding; set it False (swin.STANDARD).')
    return out


Config = SimMIMConfig


RUNLOCAL = {}


def random_unit_mask(rng: jax.Array, batch: int, grid: int, num_masked: int) -> jax.Array:
  """[B, g, g] int32, 1 = masked: per image the `num_masked` units of lowest noise."""
  noise = jax.random.uniform(rng, (batch, grid * grid))
  ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  return (ranks < num_masked).astype(jnp.int32).reshape(batch, grid, grid)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """[B, h, w, C r^2] -> [B, h r, w r, C], channels split as PyTorch's PixelShuffle (c, i, j)."""
  return einops.rearrange(x, 'b h w (c i j) -> b (h i) (w j) c', i=factor, j=factor)


def upsample(mask: jax.Array, factor: int) -> jax.Array:
  """[B, g, g] -> [B, g f, g f], nearest neighbour."""
  return jnp.repeat(jnp.repeat(mask, factor, axis=1), factor, axis=2)


def masked_l1_loss(pred: jax.Array, images: jax.Array, pixel_mask: jax.Array) -> jax.Array:
  """SimMIM's loss: sum |images - pred| over masked pixels / (masked pixels + 1e-5) / channels.

  pred, images: [B, H, W, C]; pixel_mask: [B, H, W] (1 = masked).
  """
  weight = pixel_mask.astype(jnp.float32)[..., None]
  l1 = jnp.abs(images.astype(jnp.float32) - pred.astype(jnp.float32))
  return jnp.sum(l1 * weight) / (jnp.sum(weight) + L1_EPS) / images.shape[-1]


class ConvDecoder(nn.Module):
  """SimMIM's `decoder.0`: Conv1x1(C -> features) on the last-stage tokens."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return Conv1x1(self.features, self.dtype, name='0')(z)


class SimMIM(nn.Module):
  """SimMIM pretraining model.

  `__call__(images, mask=None, train=False)` with images [B, H, W, 3] (normalized) and an
  optional mask [B, H/unit, W/unit] (1 = masked) returns {'loss', 'pred': [B, H, W, 3] the
  reconstructed (normalized) image, 'mask'}. Without `mask`, one per image is drawn from the
  'mask' rng.
  """
  config: SimMIMConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    enc = self.config.encoder
    self.encoder = networks.encoder_module(enc.name).Encoder(enc, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    self.mask_token = self.param('mask_token', trunc_normal_init, (1, 1, enc.embed_dim))
    out_dim = enc.stride**2 * enc.in_chans
    if self.config.decoder == 'conv':
      self.decoder = ConvDecoder(out_dim, self.dtype)
    else:
      self.decoder_pred = dense(out_dim, dtype=self.dtype)

  def encode_masked(self, images: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Patch embeddings with the token at masked units, through the encoder: [B, h, w, F]."""
    c = self.config
    x = self.encoder.embed(images)  # [B, G, G, C], after the patch embedding's norm
    masked = upsample(mask, c.unit_size // c.encoder.patch_size)[..., None] == 1
    x = jnp.where(masked, self.mask_token.astype(x.dtype), x)
    if c.encoder.name == 'swin':
      return self.encoder.stages(x + self.encoder.position_embedding(), None, train)
    return self.encoder.stages(x, jnp.asarray(grid_coordinates(x.shape[1])), train)

  def decode(self, z: jax.Array) -> jax.Array:
    """Last-stage tokens [B, h, w, C] -> the image [B, h s, w s, 3] (s = the encoder stride)."""
    enc = self.config.encoder
    if self.config.decoder == 'conv':
      return pixel_shuffle(self.decoder(z), enc.stride).astype(jnp.float32)
    # One (stride/2)^2 x 3 patch (row, col, channel order) per sub-token of a 2x shuffle.
    patches = pixel_shuffle(self.decoder_pred(z), 2)
    b, h, w, _ = patches.shape
    return unpatchify(patches.reshape(b, h * w, -1), enc.stride // 2,
                      enc.in_chans).astype(jnp.float32)

  def __call__(self, images: jax.Array, mask: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, jax.Array]:
    c = self.config
    if mask is None:
      mask = random_unit_mask(self.make_rng('mask'), images.shape[0], c.grid, c.num_masked)
    check_mask(mask, c)
    mask = jnp.asarray(mask, jnp.int32)
    pred = self.decode(self.encode_masked(images, mask, train))
    loss = masked_l1_loss(pred, images, upsample(mask, c.unit_size))
    return {'loss': loss, 'pred': pred, 'mask': mask}


Model = SimMIM


def check_mask(mask, config: SimMIMConfig) -> None:
  """An explicit mask must be [B, g, g] on the unit grid (checked when not traced)."""
  if not concrete(mask):
    return
  shape = np.shape(mask)
  if len(shape) != 3 or shape[1:] != (config.grid, config.grid):
    raise ValueError(f'mask must be [B, {config.grid}, {config.grid}] on the '
                     f'{config.unit_size} px unit grid (1 = masked); got shape {shape}.')


# ---- what generic code asks of an objective (objectives/__init__.py) ----

# SimMIM's `no_weight_decay` (mask token, absolute table) and keywords (bias tables).
NO_WEIGHT_DECAY = frozenset({'mask_token', 'relative_position_bias_table', 'absolute_pos_embed'})


def picture_columns(images: np.ndarray, out: Dict[str, np.ndarray], config: SimMIMConfig
                    ) -> Tuple[Sequence[int], List[Tuple[str, np.ndarray]]]:
  """Columns original | masked input | prediction | prediction at masked units + visible."""
  images = np.asarray(images, np.float32)
  hidden = np.kron(np.asarray(out['mask']), np.ones((config.unit_size,) * 2))[..., None]
  pred = np.asarray(out['pred'], np.float32)
  return range(len(images)), [('original', images), ('masked input', images * (1 - hidden)),
                              ('prediction', pred),
                              ('pred + visible', np.where(hidden == 1, pred, images))]


def flops_per_image(config: SimMIMConfig) -> Dict[str, float]:
  """The encoder on every token of the image; the decoder one linear map per last-stage token."""
  enc = config.encoder
  encoder = networks.encoder_module(enc.name).forward_flops(enc)
  tokens = (enc.img_size // enc.stride)**2
  decoder = {'decoder': flops.linear(tokens, enc.num_features, enc.stride**2 * enc.in_chans)}
  return flops.with_totals(encoder, decoder)


def fixed_buffers(config: SimMIMConfig) -> Dict[str, np.ndarray]:
  """The encoder's non-trainable tensors (the decoder has none), by their PyTorch names."""
  return networks.encoder_module(config.encoder.name).fixed_buffers(config.encoder)
