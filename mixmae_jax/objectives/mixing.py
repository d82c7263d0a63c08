"""Mixing and masking, described by a per-token *source slot*.

A mixed sample is built from a group of S images. `source[l]` says which slot of the group the
token at position l comes from, and `group[i, s]` is the batch index of the image in slot s of
mixed sample i. Mixing is one gather, the attention mask is `source[q] == source[k]`, and a mix
embedding is a lookup by slot. MixMAE is S = 2 with a batch-shared mask and flip pairing
(image i with image B-1-i): slot 0 is the image itself, slot 1 its partner. MixedAE is S images
per mixed sample with a source map drawn per sample (`partition_sources`): B images make B / S
mixed samples (`consecutive_groups`), each image in exactly one slot, and unmixing is the
inverse gather (`unmix_tokens`).
"""
from typing import List, Optional

import jax
import jax.numpy as jnp


def num_masked(num_units: int, mask_ratio: float) -> int:
  """Units taken from the partner: int(L * r), computed in Python float64 as the official code."""
  return int(num_units * mask_ratio)


def draw_mask(rng: jax.Array, grid: int, mask_ratio: float,
              range_mask_ratio: float = 0.0) -> jax.Array:
  """A [grid, grid] int32 mask with exactly int(grid^2 * r) ones (1 = token from the partner).

  With `range_mask_ratio` > 0, r is jittered by U(0, range) for this draw; the count is then a
  traced value, so shapes stay static: units are ranked by noise and the lowest ranks taken.
  """
  num_units = grid * grid
  noise_rng, ratio_rng = jax.random.split(rng)
  noise = jax.random.uniform(noise_rng, (num_units,))
  ranks = jnp.argsort(jnp.argsort(noise))
  if range_mask_ratio > 0:
    ratio = mask_ratio + jax.random.uniform(ratio_rng, (), maxval=range_mask_ratio)
    count = jnp.floor(num_units * ratio).astype(jnp.int32)
  else:
    count = num_masked(num_units, mask_ratio)
  return (ranks < count).astype(jnp.int32).reshape(grid, grid)


def upsample(mask: jax.Array, factor: int) -> jax.Array:
  """Nearest-neighbour upsampling of a [h, w] map to [h * factor, w * factor]."""
  return jnp.repeat(jnp.repeat(mask, factor, axis=0), factor, axis=1)


def stage_sources(mask: jax.Array, num_stages: int) -> List[jax.Array]:
  """Per-stage source maps of a hierarchical encoder, finest first.

  `mask` lives on the last stage's grid; stage s sees it upsampled by 2^(num_stages - 1 - s), so
  every token inherits the source of the coarse unit it lies in and patch merging never mixes
  sources.
  """
  return [upsample(mask, 2**(num_stages - 1 - s)) for s in range(num_stages)]


def flip_pairing(batch_size: int) -> jax.Array:
  """[B, 2] group table pairing image i (slot 0) with image B-1-i (slot 1)."""
  i = jnp.arange(batch_size)
  return jnp.stack([i, batch_size - 1 - i], axis=-1)


def slot_members(group: jax.Array) -> jax.Array:
  """[B, S] inverse of `group`: member[j, s] is the mixed sample holding image j in slot s.

  Assumes every image fills every slot exactly once (true of flip pairing and of rotations).
  """
  num_samples, num_slots = group.shape
  slots = jnp.broadcast_to(jnp.arange(num_slots), group.shape)
  samples = jnp.broadcast_to(jnp.arange(num_samples)[:, None], group.shape)
  return jnp.zeros_like(group).at[group, slots].set(samples)


def mix_tokens(x: jax.Array, source: jax.Array, group: jax.Array) -> jax.Array:
  """Gather a mixed batch: out[i, l] = x[group[i, source[l]], l] (or source[i, l]).

  Args:
    x: [B, L, C] token sequences of the B images.
    source: [L] slot of each position, shared by the mixed samples, or [M, L] per sample.
    group: [M, S] batch index of the image in each slot of each of the M mixed samples.
  Returns:
    [M, L, C] mixed sequences.
  """
  if source.ndim == 1:
    rows = group[:, source]  # [M, L]
  else:
    rows = jnp.take_along_axis(group, source, axis=1)
  return x[rows, jnp.arange(x.shape[1])[None, :]]


def partition_sources(rng: jax.Array, num_samples: int, length: int,
                      num_slots: int) -> jax.Array:
  """[M, L] int32 source maps, one per mixed sample, each slot at exactly L / S positions.

  Every row ranks uniform noise and gives slot s the positions of ranks [s L/S, (s+1) L/S), so
  each image's share is a uniform random subset of L / S positions (MAE's law for one image),
  the S shares partition the sequence, and the rows are independent. Static shapes throughout.
  """
  if length % num_slots:
    raise ValueError(f'{length} positions do not split into {num_slots} equal shares.')
  noise = jax.random.uniform(rng, (num_samples, length))
  ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  return (ranks // (length // num_slots)).astype(jnp.int32)


def consecutive_groups(batch_size: int, num_slots: int) -> jax.Array:
  """[B / S, S] group table: mixed sample i holds images i S, ..., i S + S - 1 in its slots.

  The input stream is shuffled, so neighbours in a batch are a random group.
  """
  if batch_size % num_slots:
    raise ValueError(f'a batch of {batch_size} images does not split into groups of '
                     f'{num_slots}.')
  return jnp.arange(batch_size).reshape(-1, num_slots)


def rotate_sources(source: jax.Array, group: jax.Array):
  """Full mixing: each group's S images make S mixed samples instead of one.

  Sample j of group g takes position l from slot (source[g, l] + j) mod S, so at every position
  the S images are permuted across the S samples, each image appears in every sample, and every
  slot still covers exactly its L / S share of each sample.

  Args:
    source: [G, L] one source map per group (`partition_sources`).
    group: [G, S] the group table.
  Returns:
    (source [G S, L], group [G S, S]): sample g S + j is the j-th of group g.
  """
  num_slots = group.shape[1]
  shift = jnp.tile(jnp.arange(num_slots, dtype=source.dtype), source.shape[0])  # [G S]
  rotated = (jnp.repeat(source, num_slots, axis=0) + shift[:, None]) % num_slots
  return rotated, jnp.repeat(group, num_slots, axis=0)


def image_places(group: jax.Array):
  """(sample [B], slot [B]): where each image sits in a group table [M, S] that holds every
  image exactly once (`consecutive_groups`), the inverse of `group`."""
  num_slots = group.shape[1]
  place = jnp.argsort(group.reshape(-1))  # image j sits at flat position place[j]
  return place // num_slots, place % num_slots


def unmix_tokens(z: jax.Array, source: jax.Array, group: jax.Array):
  """The inverse gather of `mix_tokens` for groups that hold each image once.

  Args:
    z: [M, L, C] mixed sequences (encoder outputs, say).
    source: [M, L] slot of each position of each mixed sample.
    group: [M, S] batch index of the image in each slot.
  Returns:
    ([B, L, C]: row j is image j's mixed sample, [B, L] bool: where that row holds image j's
    own tokens). Where the mask is True, unmix_tokens(mix_tokens(x)) equals x.
  """
  sample, slot = image_places(group)
  return z[sample], source[sample] == slot[:, None]


def unmix_dual(branches: jax.Array, source: jax.Array, group: jax.Array) -> jax.Array:
  """Each image's predictions from the two reconstruction branches of a two-slot mix.

  Branch s of mixed sample i sees only slot s's tokens, so it predicts the image in slot s at
  the positions where source != s. Image j's prediction at l therefore comes from branch
  s = 1 - source[l] of the mixed sample that holds j in slot s.

  Args:
    branches: [2, B, L, D] decoder outputs; branches[s, i] kept slot s of mixed sample i.
    source: [L] slot of each position (0 or 1).
    group: [B, 2] pairing table.
  Returns:
    [B, L, D], row j being image j's prediction at every position.
  """
  _, batch, length, depth = branches.shape
  hidden_slot = 1 - source  # [L]
  samples = slot_members(group)[:, hidden_slot]  # [B, L]
  flat = branches.reshape(2 * batch, length, depth)
  return flat[hidden_slot[None, :] * batch + samples, jnp.arange(length)[None, :]]


def same_source(source_q: jax.Array, source_k: Optional[jax.Array] = None) -> jax.Array:
  """[..., Lq, Lk] bool: may query q attend to key k (both from the same image)?"""
  source_k = source_q if source_k is None else source_k
  return source_q[..., :, None] == source_k[..., None, :]

