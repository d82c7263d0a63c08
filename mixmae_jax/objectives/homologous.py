"""Homologous recognition: telling, inside a mixed sequence, which tokens share an image.

The pieces MixedAE's contrastive signal is built from, and the diagnostics that show whether it
teaches the encoder something or is solved by a shortcut:
- `multi_positive_nce`: the InfoNCE with every same-image token positive (supervised-contrastive
  form), on any [M, L, L] score matrix: cosine similarities of features, or attention scores;
- `ProjectionHead`: an MLP the features pass through before the loss, so what the loss shapes
  (for example a code of the token's slot) can live in the head instead of the representation;
- `slot_code_floor`: the loss that features which are nothing but a code of their slot reach,
  the value a collapsed representation sits at;
- `effective_rank`: exp(entropy) of the feature covariance's spectrum, which falls as features
  collapse towards a few points.
"""
import math
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax.networks.layers import MASKED_LOGIT, dense, layer_norm
from mixmae_jax.objectives import mixing


def multi_positive_nce(scores: jax.Array, source: jax.Array) -> jax.Array:
  """Mean over anchors of -mean_{p in P(i)} log softmax_{a != i}(scores_i)[p].

  scores: [M, L, L] float32 (already divided by any temperature); source: [M, L] slots, P(i) the
  other tokens of i's slot. Returns a float32 scalar.
  """
  itself = jnp.eye(source.shape[1], dtype=bool)
  scores = jnp.where(itself, MASKED_LOGIT, scores.astype(jnp.float32))
  log_prob = scores - jax.nn.logsumexp(scores, axis=-1, keepdims=True)
  positive = mixing.same_source(source) & ~itself
  per_anchor = jnp.sum(jnp.where(positive, log_prob, 0.0), -1) / jnp.sum(positive, -1)
  return -jnp.mean(per_anchor)


def cosine_scores(features: jax.Array, temperature: float) -> jax.Array:
  """[M, L, D] -> [M, L, L] float32 cosine similarities over the temperature."""
  f = features.astype(jnp.float32)
  f = f * jax.lax.rsqrt(jnp.sum(jnp.square(f), -1, keepdims=True) + 1e-12)
  return jnp.einsum('mld,mkd->mlk', f, f) / temperature


def slot_code_floor(share: int, num_slots: int, temperature: float) -> float:
  """The contrastive loss of features that are pure slot codes: cosine 1 within a slot and
  -1 / (S - 1) across (the S codes a regular simplex), the loss's minimum. Each anchor has
  share - 1 positives and (S - 1) share negatives."""
  within, across = 1.0 / temperature, -1.0 / ((num_slots - 1) * temperature)
  return -within + math.log((share - 1) * math.exp(within) +
                            (num_slots - 1) * share * math.exp(across))


def effective_rank(features: jax.Array) -> jax.Array:
  """exp(entropy of the normalised eigenvalues of the covariance) of [..., D] features, all
  leading axes pooled: D for isotropic features, 1 for features on a line (no gradient)."""
  f = jax.lax.stop_gradient(features).astype(jnp.float32)
  f = f.reshape(-1, f.shape[-1])
  f = f - jnp.mean(f, axis=0, keepdims=True)
  eig = jnp.clip(jnp.linalg.eigvalsh(f.T @ f / f.shape[0]), 0.0)
  p = eig / jnp.maximum(jnp.sum(eig), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


class ProjectionHead(nn.Module):
  """Linear -> LayerNorm -> GELU -> Linear: [..., D] -> [..., dims[-1]] (the projector of
  contrastive methods; ours for MixedAE, whose paper does not describe one)."""
  dims: Tuple[int, int] = (512, 128)
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = dense(self.dims[0], dtype=self.dtype, name='fc1')(x)
    x = nn.gelu(layer_norm(dtype=self.dtype, name='norm')(x), approximate=False)
    return dense(self.dims[1], dtype=self.dtype, name='fc2')(x)
