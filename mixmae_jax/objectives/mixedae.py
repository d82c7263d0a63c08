"""MixedAE: MAE on mixed inputs with homologous recognition (Chen et al., arXiv 2303.17152).

No official code exists; this follows the paper's text, and the values the
paper's text does not give are ours (marked `ours` below). Reads like the method:
  1. S = 1 / (1 - mask_ratio) = 4 images of each device's micro-batch make one mixed sample:
     every image supplies a random L / S of the positions, so the mixed sequence is full length
     and each image's share is exactly MAE's visible set for that image
     (`mixing.partition_sources`, `mixing.mix_tokens`: a gather of the patch embeddings, with
     their positions already added);
  2. segment embeddings: a learned vector per slot, added to every token of that slot (`mix`);
  3. homologous attention: in the chosen encoder blocks each query keeps only its TopK keys by
     score, K = L / S, so a query can keep about its own image's tokens
     (`homologous_modifiers`). Ablations: 'off' (naive mixing, full attention) and 'oracle' (the
     same-image mask, as MixMAE uses);
  4. homologous contrastive loss: an InfoNCE over each mixed sample's encoder patch features,
     patches of the same image positive and those of the others negative
     (`homologous_contrastive_loss`); with it, the TopK accuracy (the share of kept keys that
     are homologous) goes to the training log;
  5. reconstruction: unmix by the inverse gather (`mixing.unmix_tokens`), then MAE's decoder
     rebuilds each image from its own tokens with mask tokens elsewhere; norm-pix MSE on each
     image's hidden patches (`decode`).

**The cls token.** Every image keeps its own: a mixed sample starts with S cls tokens, one per
slot (the slot's segment embedding added), so it holds S + L tokens. Each cls token belongs to
its image's slot for homologous attention (its own image is what the oracle mask lets it see),
the contrastive loss leaves the cls tokens out, and each image's decoder sequence starts with its
own cls token, as in MAE. So with the oracle mask and no segment embeddings every image's tokens,
cls included, go through exactly MAE's computation (tests/test_mixedae.py checks it).

Explicit masks: `source` int [B / S, L], the slot of each position of each mixed sample (each
slot exactly L / S times per row); mixed sample i holds images i S, ..., i S + S - 1.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mixmae_jax import networks
from mixmae_jax.networks import decoder as decoder_lib
from mixmae_jax.networks import flops, vit
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.layers import (Dtype, MASKED_LOGIT, TOP_K_METHODS, AttentionModifier,
                                        trunc_normal_init)
from mixmae_jax.objectives.contract import RNG_STREAMS  # noqa: F401  (the contract's)
from mixmae_jax.objectives import mixing
from mixmae_jax.objectives.mae import masked_reconstruction_loss
from mixmae_jax.objectives.patches import patchify, pixel_targets, predicted_images, unpatchify

NAME = 'mixedae'
DEFAULT_ENCODER = 'vit'
HOMOLOGOUS_ATTENTION = ('topk', 'off', 'oracle')


@dataclasses.dataclass(frozen=True)
class MixedAEConfig:
  """MixedAE pretraining model: MAE's ViT and decoder, and the mixing and recognition settings."""
  objective: ClassVar[str] = NAME
  encoder: Any = vit.ViTConfig()
  decoder: DecoderConfig = DecoderConfig(norm_eps=1e-6)
  mask_ratio: float = 0.75  # S = 1 / (1 - mask_ratio) images per mixed sample
  norm_pix_loss: bool = True
  segment_embeddings: bool = True
  homologous_attention: str = 'topk'  # 'topk', 'off' (naive mixing) or 'oracle' (same image)
  topk_keys: int = 0  # K; 0: L / S (ours)
  topk_blocks: Tuple[int, ...] = ()  # encoder blocks with homologous attention; (): all (ours)
  topk_method: str = 'threshold'  # 'threshold' or 'top_k' (see layers.AttentionModifier)
  contrastive_weight: float = 1.0  # ours; 0 turns the loss off
  contrastive_temperature: float = 0.25  # ours

  @property
  def num_sources(self) -> int:
    """S: images per mixed sample, 1 / (1 - mask_ratio) rounded (4 at 0.75)."""
    return int(round(1.0 / (1.0 - self.mask_ratio)))

  @property
  def share(self) -> int:
    """Positions each image supplies: L / S (MAE's visible count)."""
    return self.encoder.num_patches // self.num_sources

  @property
  def sequence_length(self) -> int:
    """Tokens of a mixed sample: S cls tokens and L patches."""
    return self.num_sources + self.encoder.num_patches

  @property
  def num_keys(self) -> int:
    """K of homologous attention."""
    return self.topk_keys or self.share

  @property
  def homologous_blocks(self) -> Tuple[int, ...]:
    return tuple(self.topk_blocks) or tuple(range(self.encoder.depth))

  def problems(self) -> List[str]:
    if self.encoder.name != 'vit':
      return [f'encoder.name={self.encoder.name!r}: MixedAE mixes the patches of a plain ViT; '
              f'use vit.']
    out = ['encoder.' + p for p in self.encoder.problems()]
    out += ['objective.' + p for p in self.decoder.problems()]
    if out:
      return out
    return self._mixing_problems() + self._recognition_problems()

  def _mixing_problems(self) -> List[str]:
    r, length = self.mask_ratio, self.encoder.num_patches
    if not 0.0 < r < 1.0 or abs(1.0 / (1.0 - r) - self.num_sources) > 1e-6 or \
        self.num_sources < 2:
      return [f'objective.mask_ratio={r}: MixedAE mixes 1 / (1 - mask_ratio) images, which must '
              f'be a whole number >= 2 (0.75 mixes 4, 0.5 mixes 2).']
    if length % self.num_sources:
      return [f'objective.mask_ratio={r} mixes {self.num_sources} images, which must split the '
              f'{length} patches equally: change encoder.img_size or mask_ratio.']
    return []

  def _recognition_problems(self) -> List[str]:
    out = []
    if self.homologous_attention not in HOMOLOGOUS_ATTENTION:
      out.append(f'objective.homologous_attention={self.homologous_attention!r}: use topk, off '
                 f'(naive mixing) or oracle (the same-image mask).')
    if not 0 <= self.topk_keys <= self.sequence_length:
      out.append(f'objective.topk_keys={self.topk_keys} must lie in [1, {self.sequence_length}] '
                 f'(the mixed sequence), or be 0 for L / S = {self.share}.')
    bad = [b for b in self.topk_blocks if not 0 <= b < self.encoder.depth]
    if bad:
      out.append(f'objective.topk_blocks={tuple(self.topk_blocks)}: blocks {bad} do not exist '
                 f'(depth {self.encoder.depth}); () means every block.')
    if self.topk_method not in TOP_K_METHODS:
      out.append(f'objective.topk_method={self.topk_method!r}: use threshold or top_k.')
    if self.contrastive_weight < 0:
      out.append(f'objective.contrastive_weight={self.contrastive_weight} must be >= 0 (0: off).')
    if self.contrastive_temperature <= 0:
      out.append(f'objective.contrastive_temperature={self.contrastive_temperature} must be > 0.')
    if self.contrastive_weight > 0 and self.share < 2:
      out.append(f'objective.contrastive_weight={self.contrastive_weight}: each image supplies '
                 f'{self.share} patch, so no patch has a positive; set it to 0.')
    return out


Config = MixedAEConfig


def fields() -> ml_collections.ConfigDict:
  """`model.objective` of a config: MAE's decoder and ratio, and the three components, all on."""
  c = MixedAEConfig()
  return ml_collections.ConfigDict(dict(
      name=NAME, decoder_dim=512, decoder_depth=8, decoder_num_heads=16, decoder_mlp_ratio=4.0,
      mask_ratio=c.mask_ratio, norm_pix_loss=c.norm_pix_loss,
      segment_embeddings=c.segment_embeddings,  # ablation switch 1
      homologous_attention=c.homologous_attention,  # ablation switch 2: topk, off, oracle
      topk_keys=c.topk_keys, topk_blocks=c.topk_blocks, topk_method=c.topk_method,
      contrastive_weight=c.contrastive_weight,  # ablation switch 3: 0 turns the loss off
      contrastive_temperature=c.contrastive_temperature))


RUNLOCAL = dict(decoder_dim=64, decoder_depth=1, decoder_num_heads=2)


def config_from_fields(model) -> MixedAEConfig:
  o = model.objective
  decoder = DecoderConfig(dim=o.decoder_dim, depth=o.decoder_depth,
                          num_heads=o.decoder_num_heads, mlp_ratio=o.decoder_mlp_ratio,
                          norm_eps=1e-6)
  return MixedAEConfig(
      encoder=networks.encoder_config(model.encoder), decoder=decoder, mask_ratio=o.mask_ratio,
      norm_pix_loss=o.norm_pix_loss, segment_embeddings=o.segment_embeddings,
      homologous_attention=o.homologous_attention, topk_keys=o.topk_keys,
      topk_blocks=tuple(o.topk_blocks), topk_method=o.topk_method,
      contrastive_weight=o.contrastive_weight, contrastive_temperature=o.contrastive_temperature)


def sequence_sources(source: jax.Array, num_slots: int) -> jax.Array:
  """[M, L] patch slots -> [M, S + L]: the S cls tokens (slot s for the s-th), then the patches."""
  cls = jnp.broadcast_to(jnp.arange(num_slots, dtype=source.dtype), (source.shape[0], num_slots))
  return jnp.concatenate([cls, source], axis=1)


def homologous_contrastive_loss(features: jax.Array, source: jax.Array,
                                temperature: float) -> jax.Array:
  """InfoNCE over the patches of each mixed sample, same-image patches positive.

  For anchor i of a sample, with cosine similarities s and P(i) the other patches of i's image:
  loss_i = -mean_{p in P(i)} log(exp(s_ip / T) / sum_{a != i} exp(s_ia / T)); the loss is the
  mean over anchors and samples (the multi-positive InfoNCE of supervised contrastive learning).

  features: [M, L, D] encoder patch features; source: [M, L] slots. Returns a float32 scalar.
  """
  f = features.astype(jnp.float32)
  f = f * jax.lax.rsqrt(jnp.sum(jnp.square(f), -1, keepdims=True) + 1e-12)
  logits = jnp.einsum('mld,mkd->mlk', f, f) / temperature
  itself = jnp.eye(source.shape[1], dtype=bool)
  logits = jnp.where(itself, MASKED_LOGIT, logits)
  log_prob = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  positive = mixing.same_source(source) & ~itself
  per_anchor = jnp.sum(jnp.where(positive, log_prob, 0.0), -1) / jnp.sum(positive, -1)
  return -jnp.mean(per_anchor)


class MixedAE(nn.Module):
  """MixedAE pretraining model.

  `__call__(images, source=None, train=False)` with images [B, H, W, 3] (normalized, B a
  multiple of S) and an optional source map [B / S, L] returns {'loss': scalar, 'pred':
  [B, L, patch^2 x 3] every image's predicted patches in raster order, 'mask': [B, L] (1 = hidden
  from that image, as MAE's), 'source': [B / S, L], 'metrics': {'reconstruction_loss', and
  'contrastive_loss' and 'topk_accuracy' when those components are on}}. Without `source`, one
  per mixed sample is drawn from the 'mask' rng.
  """
  config: MixedAEConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.encoder = vit.Encoder(c.encoder, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    if c.segment_embeddings:
      self.segment_embed = self.param('segment_embed', trunc_normal_init,
                                      (c.num_sources, c.encoder.embed_dim))
    self.decoder = decoder_lib.Decoder(c.decoder, c.encoder.patch_size**2 * c.encoder.in_chans,
                                       self.dtype, self.options)
    nn.share_scope(self, self.decoder)

  def mix(self, images: jax.Array, source: jax.Array, group: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> mixed sequences [M, S + L, D]: a cls token per slot, then each position's
    patch from the image of its slot (positions added before mixing), plus segment embeddings."""
    x = mixing.mix_tokens(self.encoder.embed(images), source, group)  # [M, L, D]
    x = self.encoder.with_cls(x, copies=self.config.num_sources)
    if self.config.segment_embeddings:
      x = x + self.segment_embed[sequence_sources(source, self.config.num_sources)]
    return x

  def homologous_modifiers(self, source: jax.Array) -> Optional[List[Optional[AttentionModifier]]]:
    """One attention modifier per encoder block (None: plain attention), or None when off."""
    c = self.config
    if c.homologous_attention == 'off':
      return None
    slots = sequence_sources(source, c.num_sources)  # [M, S + L]
    if c.homologous_attention == 'oracle':
      modifier = AttentionModifier(allowed=mixing.same_source(slots)[:, None])
    else:
      modifier = AttentionModifier(groups=slots, top_k=c.num_keys, top_k_method=c.topk_method)
    return [modifier if b in c.homologous_blocks else None for b in range(c.encoder.depth)]

  def encode_mixed(self, x: jax.Array, source: jax.Array,
                   train: bool) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """[M, S + L, D] mixed tokens -> (encoder output [M, S + L, D], metrics)."""
    modifiers = self.homologous_modifiers(source)
    if modifiers is None:
      return self.encoder.encode(x, train), {}
    z, stats = self.encoder.encode(x, train, modifiers)
    precisions = [s['top_k_precision'] for s in stats if 'top_k_precision' in s]
    return z, ({'topk_accuracy': jnp.mean(jnp.stack(precisions))} if precisions else {})

  def decode(self, z: jax.Array, source: jax.Array, group: jax.Array,
             train: bool) -> Tuple[jax.Array, jax.Array]:
    """Each image from its own tokens: (predictions [B, L, P], visible [B, L] bool).

    z: [M, S + L, D] encoder output. Image j's decoder sequence is its cls token, then its own
    tokens at its positions and the mask token at the others, plus the sin-cos table.
    """
    s = self.config.num_sources
    x = self.decoder.embed(z)  # [M, S + L, d]: B (1 + L / S) tokens, as many as MAE embeds
    patches, visible = mixing.unmix_tokens(x[:, s:], source, group)  # [B, L, d], [B, L]
    sample, slot = mixing.image_places(group)
    cls = x[sample, slot][:, None]  # [B, 1, d]: each image's own cls token
    token = self.decoder.mask_token.astype(x.dtype)
    x = jnp.concatenate([cls, jnp.where(visible[..., None], patches, token)], axis=1)
    x = x.astype(jnp.float32) + jnp.asarray(
        vit.sincos_table(self.config.decoder.dim, self.config.encoder.grid))
    return self.decoder.predict(x, train)[:, 1:], visible

  def __call__(self, images: jax.Array, source: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, Any]:
    c = self.config
    group = mixing.consecutive_groups(images.shape[0], c.num_sources)
    if source is None:
      source = mixing.partition_sources(self.make_rng('mask'), group.shape[0],
                                        c.encoder.num_patches, c.num_sources)
    _check_source(source, c, images.shape[0])
    source = jnp.asarray(source, jnp.int32)
    z, metrics = self.encode_mixed(self.mix(images, source, group), source, train)
    pred, visible = self.decode(z, source, group, train)
    target = pixel_targets(images, c.encoder.patch_size, c.norm_pix_loss)
    hidden = (~visible).astype(jnp.int32)
    loss = reconstruction = masked_reconstruction_loss(pred, target, hidden)
    metrics['reconstruction_loss'] = reconstruction
    if c.contrastive_weight > 0:
      contrastive = homologous_contrastive_loss(z[:, c.num_sources:], source,
                                                c.contrastive_temperature)
      loss = loss + c.contrastive_weight * contrastive
      metrics['contrastive_loss'] = contrastive
    return {'loss': loss, 'pred': pred, 'mask': hidden, 'source': source, 'metrics': metrics}


Model = MixedAE


def _check_source(source, config: MixedAEConfig, batch: int) -> None:
  """An explicit source map must give every slot exactly L / S positions (checked untraced)."""
  if isinstance(source, jax.core.Tracer):
    return
  source = np.asarray(source)
  s, length = config.num_sources, config.encoder.num_patches
  want = (batch // s, length)
  counts_ok = source.ndim == 2 and all(
      np.all(np.sum(source == slot, axis=1) == config.share) for slot in range(s))
  if source.shape != want or not counts_ok:
    raise ValueError(f'source must be int [{want[0]}, {length}] (B / S mixed samples) with each '
                     f'slot 0..{s - 1} exactly {config.share} times per row; got shape '
                     f'{source.shape}.')


# ---- what generic code asks of an objective (objectives/__init__.py) ----

# MAE decays its cls and mask tokens; the segment embeddings are embeddings (ours).
NO_WEIGHT_DECAY = frozenset({'segment_embed'})


def batch_multiple(config: MixedAEConfig) -> Tuple[int, str]:
  s = config.num_sources
  return s, f'MixedAE mixes groups of 1 / (1 - mask_ratio) = {s} images of each micro-batch'


def mixed_pixels(images: np.ndarray, source: np.ndarray, patch: int) -> np.ndarray:
  """[B, H, W, C] images and [B / S, L] sources -> [B / S, H, W, C] mixed pictures."""
  s = len(images) // len(source)
  patches = np.asarray(patchify(images, patch))  # [B, L, P]
  group = np.arange(len(images)).reshape(-1, s)
  rows = np.take_along_axis(group, source, axis=1)  # [M, L]
  mixed = patches[rows, np.arange(source.shape[1])[None]]
  return np.asarray(unpatchify(mixed, patch, images.shape[-1]))


def picture_columns(images: np.ndarray, out: Dict[str, np.ndarray], config: MixedAEConfig
                    ) -> Tuple[Sequence[int], List[Tuple[str, np.ndarray]]]:
  """Rows: the S images of each mixed sample together; columns original | mixed input (the
  sample's) | the image's own patches | reconstruction | reconstruction + own patches."""
  images = np.asarray(images, np.float32)
  enc, s = config.encoder, config.num_sources
  source = np.asarray(out['source'])
  mixed = np.repeat(mixed_pixels(images, source, enc.patch_size), s, axis=0)
  grid = np.asarray(out['mask']).reshape(-1, enc.grid, enc.grid)
  hidden = np.kron(grid, np.ones((enc.patch_size, enc.patch_size)))[..., None]
  recon = predicted_images(out['pred'], images, enc.patch_size, config.norm_pix_loss)
  return range(len(images)), [('original', images), ('mixed input', mixed),
                              ('own patches', images * (1 - hidden)),
                              ('reconstruction', recon),
                              ('recon + own', np.where(hidden == 1, recon, images))]


def flops_per_image(config: MixedAEConfig) -> Dict[str, float]:
  """Per image: a 1/S share of a mixed sample's encoder pass over S + L tokens (attention over
  whole sequences, masked or TopK-dropped pairs included) and of its contrastive similarities;
  the decoder as MAE's (1 + L tokens, 1 + L / S embedded). TopK selection compares, it does not
  multiply, so it adds no FLOPs (the benchmark's time shows its cost)."""
  enc, s = config.encoder, config.num_sources
  n, length = config.sequence_length, enc.num_patches
  encoder = {'patch_embed': flops.linear(length, enc.patch_size**2 * enc.in_chans, enc.embed_dim),
             'blocks': enc.depth * flops.transformer_block(n, enc.embed_dim, n, enc.mlp_ratio) / s,
             'contrastive': (flops.linear(length, enc.embed_dim, length) / s
                             if config.contrastive_weight > 0 else 0.0)}
  decoder = decoder_lib.forward_flops(config.decoder, embedded=n // s, sequences=1,
                                      length=1 + length, in_dim=enc.embed_dim,
                                      out_dim=enc.patch_size**2 * enc.in_chans)
  return flops.with_totals(encoder, decoder)


def fixed_buffers(config: MixedAEConfig) -> Dict[str, np.ndarray]:
  """MAE's non-trainable tensors (no official MixedAE model exists): the two sin-cos tables."""
  return {**vit.fixed_buffers(config.encoder),
          'decoder_pos_embed': vit.sincos_table(config.decoder.dim, config.encoder.grid)}
