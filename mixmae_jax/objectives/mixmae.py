"""MixMAE: mixed and masked autoencoding for hierarchical encoders (arXiv 2205.13137).

Reads like the method:
  1. draw one unit mask (stride-32 grid) per device and step; image i borrows its partner
     B-1-i's tokens at the masked units (`mix_tokens`, a gather on patch embeddings);
  2. the Swin encoder sees the mixed batch, each token attending only to its own image;
  3. the decoder reconstructs twice: branch 0 keeps each sample's own tokens, branch 1 its
     partner's, mask tokens elsewhere (`decode_dual`);
  4. each image is supervised at every position by the branch that hid it
     (`unmix_dual`, `dual_reconstruction_loss`).
Parameter names follow the official `MixMIM` module (flat: `patch_embed`, `layers_{i}`, `norm`,
`mask_token`, `decoder_embed`, `decoder_blocks_{i}`, `decoder_norm`, `decoder_pred`).
"""
import dataclasses
import math
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import decoder as decoder_lib
from mixmae_jax.networks import flops, swin
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.layers import Dtype, trunc_normal_init
from mixmae_jax.networks.position_embedding import sincos_2d
from mixmae_jax.objectives.contract import RNG_STREAMS  # noqa: F401  (the contract's)
from mixmae_jax.objectives import mixing
from mixmae_jax.objectives.patches import pixel_targets, predicted_images

NAME = 'mixmae'
DEFAULT_ENCODER = 'swin'


@dataclasses.dataclass(frozen=True)
class MixMAEConfig:
  """MixMAE pretraining model: encoder, decoder and the mixing/loss settings."""
  objective: ClassVar[str] = NAME
  encoder: Any = swin.SwinConfig()
  decoder: DecoderConfig = DecoderConfig()
  mask_ratio: float = 0.5
  range_mask_ratio: float = 0.0
  norm_pix_loss: bool = True
  mix_embedding: bool = False  # the paper's ablation: a learned embedding per source slot

  def problems(self) -> List[str]:
    if self.encoder.name != 'swin':
      return [f'encoder.name={self.encoder.name!r}: MixMAE mixes at the output stride of a '
              f'hierarchical encoder; use swin.']
    out = ['encoder.' + p for p in self.encoder.problems()]
    out += ['objective.' + p for p in self.decoder.problems()]
    if not 0.0 < self.mask_ratio < 1.0:
      out.append(f'objective.mask_ratio={self.mask_ratio} must lie in (0, 1); MixMAE uses 0.5.')
    elif not 0.0 <= self.range_mask_ratio < 1.0 - self.mask_ratio:
      out.append(f'objective.range_mask_ratio={self.range_mask_ratio} must lie in [0, 1 - '
                 f'mask_ratio) = [0, {1.0 - self.mask_ratio:g}); the default is 0.')
    elif not out:
      out += self._mixed_unit_problems()
    return out

  def _mixed_unit_problems(self) -> List[str]:
    """At least one unit of the mixing grid must come from the partner."""
    enc = self.encoder
    grid = enc.img_size // enc.stride
    units = grid * grid
    if mixing.num_masked(units, self.mask_ratio) >= 1:
      return []
    smallest = math.ceil(1e4 / units) / 1e4
    return [f'objective.mask_ratio={self.mask_ratio} mixes int({units} units x '
            f'{self.mask_ratio:g}) = int({units * self.mask_ratio:.4g}) = 0 units of the '
            f'{grid}x{grid} mixing grid (encoder.img_size {enc.img_size} / stride {enc.stride}):'
            f' nothing would be mixed. Use mask_ratio >= {smallest:g} (1 unit of {units}).']


Config = MixMAEConfig


RUNLOCAL = dict(decoder_dim=64, decoder_depth=1, decoder_num_heads=2)


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
    enc = self.config.encoder
    self.encoder = swin.Encoder(enc, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    if self.config.mix_embedding:
      self.mix_embed = self.param('mix_embed', trunc_normal_init, (2, enc.embed_dim))
    self.decoder = decoder_lib.Decoder(self.config.decoder, enc.stride**2 * enc.in_chans,
                                       self.dtype, self.options)
    nn.share_scope(self, self.decoder)

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
    x = self.encoder.embed(images)  # [B, G, G, C]
    b, grid, _, c = x.shape
    sources = mixing.stage_sources(mask, self.config.encoder.num_stages)
    x = mixing.mix_tokens(x.reshape(b, grid * grid, c), sources[0].reshape(-1), group)
    x = x.reshape(b, grid, grid, c) + self.encoder.position_embedding()
    if self.config.mix_embedding:
      x = x + self.mix_embed[sources[0]]
    return self.encoder.stages(x, sources, train)

  def decode_dual(self, z: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Both reconstruction branches in one decoder pass over 2B sequences.

    z: [B, g, g, C] encoder output; mask: [g, g]. Returns [2, B, L, P] float32, where branch s
    keeps the tokens of slot s and puts the mask token at the others.
    """
    b, gh, gw, _ = z.shape
    x = self.decoder.embed(z.reshape(b, gh * gw, -1))  # [B, L, D]
    token = self.decoder.mask_token.astype(x.dtype)
    slot = mask.reshape(1, -1, 1)
    x = jnp.concatenate([jnp.where(slot == 0, x, token), jnp.where(slot == 1, x, token)])
    x = x.astype(jnp.float32) + jnp.asarray(sincos_2d(self.config.decoder.dim, gh, gw))[None]
    return self.decoder.predict(x, train).reshape(2, b, gh * gw, -1)

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


Model = MixMAE

# ---- what generic code asks of an objective (objectives/__init__.py) ----

# Embeddings rather than weights: the official code exempts `mask_token`; `mix_embed` is our
# name for the paper's ablated mix embedding. Relative position bias tables are decayed.
NO_WEIGHT_DECAY = frozenset({'mask_token', 'mix_embed'})


def batch_multiple(config: MixMAEConfig) -> Tuple[int, str]:
  del config
  return 2, 'MixMAE pairs image i with image B-1-i'


def picture_columns(images: np.ndarray, out: Dict[str, np.ndarray], config: MixMAEConfig
                    ) -> Tuple[Sequence[int], List[Tuple[str, np.ndarray]]]:
  """Rows are images, each beside its partner; columns original | mixed input | reconstruction
  | reconstruction + visible (the image's own units from the input, the units its partner
  covered from the prediction, as MAE's pictures show them).

  images: normalized [B, H, W, 3]; out: the model's outputs for them.
  """
  images = np.asarray(images, np.float32)
  stride = config.encoder.stride
  unit = np.kron(np.asarray(out['mask']), np.ones((stride, stride)))[None, :, :, None]
  mixed = np.where(unit == 1, images[::-1], images)
  recon = predicted_images(out['pred'], images, stride, config.norm_pix_loss)
  return pair_order(len(images)), [('original', images), ('mixed input', mixed),
                                   ('reconstruction', recon),
                                   ('recon + visible', np.where(unit == 1, recon, images))]


def pair_order(batch_size: int) -> List[int]:
  """Row order that puts each image next to its partner: 0, B-1, 1, B-2, ..."""
  order = []
  for i in range((batch_size + 1) // 2):
    order += [i] if i == batch_size - 1 - i else [i, batch_size - 1 - i]
  return order


def flops_per_image(config: MixMAEConfig) -> Dict[str, float]:
  """Model FLOPs of one training image, by part, with totals.

  The encoder runs once on the mixed image (attention over whole windows, although the
  same-source mask hides about half of the pairs); the decoder embeds the image's tokens once
  and runs both branches (2 sequences of L = (img_size / 32)^2 tokens per image).
  """
  enc = config.encoder
  length = (enc.img_size // enc.stride)**2
  encoder = swin.forward_flops(enc)
  decoder = decoder_lib.forward_flops(config.decoder, embedded=length, sequences=2,
                                      length=length, in_dim=enc.num_features,
                                      out_dim=enc.stride**2 * enc.in_chans)
  return flops.with_totals(encoder, decoder)


def fixed_buffers(config: MixMAEConfig) -> Dict[str, np.ndarray]:
  """The non-trainable tensors of the official `MixMIM` model, by their PyTorch names."""
  grid = config.encoder.img_size // config.encoder.stride
  return {**swin.fixed_buffers(config.encoder),
          'decoder_pos_embed': sincos_2d(config.decoder.dim, grid, grid)[None]}
