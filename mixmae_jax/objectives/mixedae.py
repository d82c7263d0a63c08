"""MixedAE: MAE on mixed inputs with homologous recognition (Chen et al., arXiv 2303.17152).

No official code exists; this follows the paper's text, and the values the
paper's text does not give are ours (marked `ours` below). Reads like the method:
  1. S = 1 / (1 - mask_ratio) = 4 images of each device's micro-batch make one mixed sample:
     every image supplies a random L / S of the positions, so the mixed sequence is full length
     and each image's share is exactly MAE's visible set for that image
     (`mixing.partition_sources`, `mixing.mix_tokens`: a gather of the patch embeddings, with
     their positions already added);
  2. segment embeddings: a learned vector per slot, added to every token of that slot (`mix`;
     `segment_scope`: 'input' as the paper, 'qk' only to the TopK blocks' query and key inputs,
     so selection can use a token's slot without the features carrying it, or 'none');
  3. homologous attention: in the chosen encoder blocks each query keeps only its TopK keys by
     score, K = L / S, so a query can keep about its own image's tokens
     (`homologous_modifiers`). Ablations: 'off' (naive mixing, full attention) and 'oracle' (the
     same-image mask, as MixMAE uses);
  4. homologous contrastive loss: an InfoNCE over each mixed sample's encoder patch features,
     patches of the same image positive and those of the others negative
     (`homologous.multi_positive_nce`); with it, the TopK accuracy (the share of kept keys that
     are homologous) goes to the training log. Options (ours): a projection head before the loss
     (`contrastive_head`), or the loss on the TopK blocks' head-averaged attention scores instead
     of the features (`contrastive_target='attention'`), which trains what TopK ranks;
  5. reconstruction: unmix by the inverse gather (`decoding_views`), then MAE's decoder
     rebuilds each image from its own tokens with mask tokens elsewhere; norm-pix MSE on each
     image's hidden patches (`decode`).
`mixing_mode='full'` (ours) makes S mixed samples of each group instead of one
(`mixing.rotate_sources`: at every position the group's images are permuted across the S
samples), and every image is rebuilt from each of its S samples (S times the encoder and
decoder work of 'compose').

**The cls token.** Every image keeps its own: a mixed sample starts with S cls tokens, one per
slot (the slot's segment embedding added), so it holds S + L tokens. Each cls token belongs to
its image's slot for homologous attention (its own image is what the oracle mask lets it see),
the contrastive loss leaves the cls tokens out, and each image's decoder sequence starts with its
own cls token, as in MAE. So with the oracle mask and no segment embeddings every image's tokens,
cls included, go through exactly MAE's computation (tests/test_mixedae.py checks it).

Explicit masks: `source` int [B / S, L], the slot of each position of each mixed sample (each
slot exactly L / S times per row); mixed sample i holds images i S, ..., i S + S - 1.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import decoder as decoder_lib
from mixmae_jax.networks import flops, vit
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.layers import Dtype, AttentionModifier, trunc_normal_init
from mixmae_jax.objectives.contract import RNG_STREAMS, concrete  # noqa: F401  (the contract's)
from mixmae_jax.objectives import homologous, mixedae_config, mixing
from mixmae_jax.objectives.patches import (masked_reconstruction_loss, patchify, pixel_targets,
                                           predicted_images, unpatchify)

NAME = mixedae_config.NAME
DEFAULT_ENCODER = mixedae_config.DEFAULT_ENCODER
MixedAEConfig = Config = mixedae_config.MixedAEConfig
RUNLOCAL, upgrade_record = mixedae_config.RUNLOCAL, mixedae_config.upgrade_record


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
  return homologous.multi_positive_nce(homologous.cosine_scores(features, temperature), source)


def decoding_views(group: jax.Array, config: MixedAEConfig):
  """(sample [V], slot [V], image [V]): each image is rebuilt from the mixed samples it is in.

  'compose': V = B, image j from its one sample. 'full' (`group` the rotated table [B, S]):
  V = S B, ordered j-major, so the first B views are every image from its group's first sample.
  """
  if config.mixing_mode == 'compose':
    sample, slot = mixing.image_places(group)
    return sample, slot, jnp.arange(group.size)
  s, batch = config.num_sources, group.shape[0]
  image = jnp.tile(jnp.arange(batch), s)
  sample = (image // s) * s + jnp.repeat(jnp.arange(s), batch)
  return sample, image % s, image


class MixedAE(nn.Module):
  """MixedAE pretraining model.

  `__call__(images, source=None, train=False)` with images [B, H, W, 3] (normalized, B a
  multiple of S) and an optional source map [B / S, L] returns {'loss': scalar, 'pred':
  [B, L, patch^2 x 3] every image's predicted patches in raster order, 'mask': [B, L] (1 = hidden
  from that image, as MAE's), 'source': [B / S, L], 'metrics': {'reconstruction_loss',
  'feature_rank', and 'contrastive_loss', 'contrastive_gap' (features target) and
  'topk_accuracy' when those components are on}}. Without `source`, one per group is drawn from
  the 'mask' rng. With 'full' mixing, `pred` and `mask` are each image's view from its group's
  first sample (the sample `source` describes).
  """
  config: MixedAEConfig
  dtype: Dtype = jnp.float32
  options: ComputeOptions = ComputeOptions()

  def setup(self):
    c = self.config
    self.encoder = vit.Encoder(c.encoder, self.dtype, self.options)
    nn.share_scope(self, self.encoder)
    if c.segment_scope != 'none':
      self.segment_embed = self.param('segment_embed', trunc_normal_init,
                                      (c.num_sources, c.encoder.embed_dim))
    if c.uses_head:
      self.contrastive_head = homologous.ProjectionHead(tuple(c.contrastive_head_dims),
                                                        self.dtype)
    self.decoder = decoder_lib.Decoder(c.decoder, c.encoder.patch_size**2 * c.encoder.in_chans,
                                       self.dtype, self.options)
    nn.share_scope(self, self.decoder)

  def mix(self, images: jax.Array, source: jax.Array, group: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> mixed sequences [M, S + L, D]: a cls token per slot, then each position's
    patch from the image of its slot (positions added before mixing), plus segment embeddings."""
    x = mixing.mix_tokens(self.encoder.embed(images), source, group)  # [M, L, D]
    x = self.encoder.with_cls(x, copies=self.config.num_sources)
    if self.config.segment_scope == 'input':
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
      modifier = AttentionModifier(
          groups=slots, top_k=c.num_keys, top_k_method=c.topk_method,
          qk_codes=self.segment_embed if c.segment_scope == 'qk' else None,
          keep_logits=c.contrastive_target == 'attention' and c.contrastive_weight > 0)
    return [modifier if b in c.homologous_blocks else None for b in range(c.encoder.depth)]

  def encode_mixed(self, x: jax.Array, source: jax.Array, train: bool
                   ) -> Tuple[jax.Array, Dict[str, jax.Array], List[jax.Array]]:
    """[M, S + L, D] mixed tokens -> (encoder output [M, S + L, D], metrics, the TopK blocks'
    head-averaged scores [M, S + L, S + L] when the contrastive loss reads them)."""
    modifiers = self.homologous_modifiers(source)
    if modifiers is None:
      return self.encoder.encode(x, train), {}, []
    z, stats = self.encoder.encode(x, train, modifiers)
    precisions = [s['top_k_precision'] for s in stats if 'top_k_precision' in s]
    metrics = {'topk_accuracy': jnp.mean(jnp.stack(precisions))} if precisions else {}
    return z, metrics, [s['logits'] for s in stats if 'logits' in s]

  def recognition_loss(self, z: jax.Array, scores: List[jax.Array],
                       source: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The homologous contrastive loss over the patches (cls tokens left out) and its gap to
    the slot-code floor (features target only: attention scores have no such bound)."""
    c, s = self.config, self.config.num_sources
    if c.contrastive_target == 'attention':
      loss = jnp.mean(jnp.stack(
          [homologous.multi_positive_nce(a[:, s:, s:], source) for a in scores]))
      return loss, {'contrastive_loss': loss}
    features = z[:, s:]
    if c.uses_head:
      features = self.contrastive_head(features)
    loss = homologous_contrastive_loss(features, source, c.contrastive_temperature)
    floor = homologous.slot_code_floor(c.share, s, c.contrastive_temperature)
    return loss, {'contrastive_loss': loss, 'contrastive_gap': loss - floor}

  def decode(self, z: jax.Array, source: jax.Array, views, train: bool
             ) -> Tuple[jax.Array, jax.Array]:
    """Each view's image from its own tokens: (predictions [V, L, P], visible [V, L] bool).

    z: [M, S + L, D] encoder output; views: `decoding_views`. A view's decoder sequence is its
    image's cls token, then its tokens at their positions and the mask token at the others,
    plus the sin-cos table.
    """
    sample, slot, _ = views
    x = self.decoder.embed(z)  # compose: B (1 + L / S) tokens, as many as MAE embeds
    patches = x[sample, self.config.num_sources:]  # [V, L, d]
    visible = source[sample] == slot[:, None]
    cls = x[sample, slot][:, None]  # [V, 1, d]: the image's own cls token
    token = self.decoder.mask_token.astype(x.dtype)
    x = jnp.concatenate([cls, jnp.where(visible[..., None], patches, token)], axis=1)
    x = x.astype(jnp.float32) + jnp.asarray(
        vit.sincos_table(self.config.decoder.dim, self.config.encoder.grid))
    return self.decoder.predict(x, train)[:, 1:], visible

  def __call__(self, images: jax.Array, source: Optional[jax.Array] = None,
               train: bool = False) -> Dict[str, Any]:
    c, batch = self.config, images.shape[0]
    group = mixing.consecutive_groups(batch, c.num_sources)
    if source is None:
      source = mixing.partition_sources(self.make_rng('mask'), group.shape[0],
                                        c.encoder.num_patches, c.num_sources)
    _check_source(source, c, batch)
    source = jnp.asarray(source, jnp.int32)
    mixed_source, mixed_group = source, group
    if c.mixing_mode == 'full':
      mixed_source, mixed_group = mixing.rotate_sources(source, group)
    z, metrics, scores = self.encode_mixed(self.mix(images, mixed_source, mixed_group),
                                           mixed_source, train)
    views = decoding_views(mixed_group, c)
    pred, visible = self.decode(z, mixed_source, views, train)
    target = pixel_targets(images, c.encoder.patch_size, c.norm_pix_loss)[views[2]]
    hidden = (~visible).astype(jnp.int32)
    loss = reconstruction = masked_reconstruction_loss(pred, target, hidden)
    metrics['reconstruction_loss'] = reconstruction
    metrics['feature_rank'] = homologous.effective_rank(z[:, c.num_sources:])
    if c.contrastive_weight > 0:
      contrastive, recognition = self.recognition_loss(z, scores, mixed_source)
      loss = loss + c.contrastive_weight * contrastive
      metrics.update(recognition)
    return {'loss': loss, 'pred': pred[:batch], 'mask': hidden[:batch], 'source': source,
            'metrics': metrics}


Model = MixedAE


def _check_source(source, config: MixedAEConfig, batch: int) -> None:
  """An explicit source map must give every slot exactly L / S positions (checked untraced)."""
  if not concrete(source):
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
  whole sequences, masked or TopK-dropped pairs included) and of its contrastive similarities
  (through the head, if any); the decoder as MAE's (1 + L tokens, 1 + L / S embedded). 'full'
  mixing multiplies all of it by S. TopK selection compares, it does not multiply, so it adds no
  FLOPs (the benchmark's time shows its cost)."""
  enc, s, k = config.encoder, config.num_sources, config.samples_per_group
  n, length = config.sequence_length, enc.num_patches
  contrastive, width = 0.0, enc.embed_dim
  if config.contrastive_weight > 0 and config.contrastive_target == 'features':
    if config.uses_head:
      hidden, width = config.contrastive_head_dims
      contrastive = k * (flops.linear(length, enc.embed_dim, hidden) +
                         flops.linear(length, hidden, width)) / s
    contrastive += k * flops.linear(length, width, length) / s
  encoder = {'patch_embed': flops.linear(length, enc.patch_size**2 * enc.in_chans, enc.embed_dim),
             'blocks': k * enc.depth * flops.transformer_block(n, enc.embed_dim, n,
                                                              enc.mlp_ratio) / s,
             'contrastive': contrastive}
  decoder = decoder_lib.forward_flops(config.decoder, embedded=k * n // s, sequences=k,
                                      length=1 + length, in_dim=enc.embed_dim,
                                      out_dim=enc.patch_size**2 * enc.in_chans)
  return flops.with_totals(encoder, decoder)


def fixed_buffers(config: MixedAEConfig) -> Dict[str, np.ndarray]:
  """MAE's non-trainable tensors (no official MixedAE model exists): the two sin-cos tables."""
  return {**vit.fixed_buffers(config.encoder),
          'decoder_pos_embed': vit.sincos_table(config.decoder.dim, config.encoder.grid)}
