"""Uniform masking (UM-MAE): which units an image shows, and the gathers that compact them.

The image is cut into units of `unit` pixels on a [g, g] grid; the units form [g/2, g/2] groups
of 2x2. *Uniform Sampling* shows exactly one unit of every group (a quarter of the image);
*Secondary Masking* replaces a share of the shown units by a learned token. A mask is an int
array, 1 = hidden by uniform sampling; groups and units are numbered in raster order, the four
units of a group 0..3 as (row 0, col 0), (0, 1), (1, 0), (1, 1).

*Compaction* moves the shown unit of every group, with its k x k tokens in their own layout, to
the group's place on a half-size grid ([g/2 * k]^2 tokens): one gather with a per-image index
(`compaction_index`). The token coordinates on the full grid travel with the tokens
(`token_coordinates`), and `uncompact` is the inverse gather. Everything is drawn on the device
from a key, with static shapes.
"""
import einops
import jax
import jax.numpy as jnp
import numpy as np

SAMPLINGS = ('balanced', 'independent')


def num_groups(grid: int) -> int:
  return (grid // 2)**2


def balanced_pool(groups: int) -> np.ndarray:
  """The official pool of visible positions: 0, 1, 2, 3 repeated ceil(groups / 2) times.

  UM-MAE's generator appends the four one-hole patterns until the pool holds at least half as
  many patterns as there are units (128 for 256 units) and gives the groups the first ones of a
  shuffle, so each position is drawn without replacement from a balanced pool.
  """
  return np.tile(np.arange(4), -(-groups // 2))


def draw_positions(rng: jax.Array, batch: int, grid: int, sampling: str = 'balanced'
                   ) -> jax.Array:
  """[B, G] int32 visible position (0..3) of every group, drawn per image.

  'balanced': the first G entries of a per-image shuffle of `balanced_pool(G)` (official);
  'independent': each group uniformly and independently.
  """
  groups = num_groups(grid)
  if sampling == 'independent':
    return jax.random.randint(rng, (batch, groups), 0, 4, jnp.int32)
  if sampling != 'balanced':
    raise ValueError(f'sampling={sampling!r}: use one of {SAMPLINGS}.')
  pool = jnp.asarray(balanced_pool(groups), jnp.int32)
  noise = jax.random.uniform(rng, (batch, pool.shape[0]))
  return pool[jnp.argsort(noise, axis=1)[:, :groups]]


def hidden_from_positions(positions: jax.Array, grid: int) -> jax.Array:
  """[B, G] visible positions -> [B, g, g] int32 uniform mask (1 = hidden)."""
  hidden = (positions[..., None] != jnp.arange(4)).astype(jnp.int32)  # [B, G, 4]
  return einops.rearrange(hidden, 'b (h w) (i j) -> b (h i) (w j)', h=grid // 2, i=2)


def draw_uniform_mask(rng: jax.Array, batch: int, grid: int,
                      sampling: str = 'balanced') -> jax.Array:
  """[B, g, g] int32, 1 = hidden: exactly one visible unit in every 2x2 group, per image."""
  return hidden_from_positions(draw_positions(rng, batch, grid, sampling), grid)


def num_secondary_kept(grid: int, secondary_ratio: float) -> int:
  """Shown units that stay themselves: int(G x (1 - ratio)), as the official code computes it."""
  return int(num_groups(grid) * (1.0 - secondary_ratio))


def draw_secondary_mask(rng: jax.Array, hidden: jax.Array, secondary_ratio: float) -> jax.Array:
  """[B, g, g] int32, 1 = a shown unit that the encoder sees as the learned token.

  Per image, the shown units are ranked by uniform noise and all but the
  `num_secondary_kept` lowest are replaced (the official ranking of mask + noise).
  """
  b, grid, _ = hidden.shape
  flat = hidden.reshape(b, -1)
  noise = jax.random.uniform(rng, flat.shape)
  ranks = jnp.argsort(jnp.argsort(flat + noise, axis=1), axis=1)
  kept = num_secondary_kept(grid, secondary_ratio)
  return ((ranks >= kept) & (flat == 0)).astype(jnp.int32).reshape(b, grid, grid)


def visible_units(hidden: jax.Array) -> jax.Array:
  """[B, g, g] uniform mask -> [B, G] raster index (row * g + col) of each group's shown unit,
  groups in raster order."""
  grid = hidden.shape[1]
  groups = einops.rearrange(hidden, 'b (h i) (w j) -> b (h w) (i j)', i=2, j=2)
  position = jnp.argmin(groups, axis=-1)  # the one 0 of the group
  h, w = jnp.divmod(jnp.arange(groups.shape[1]), grid // 2)
  return (2 * h + position // 2) * grid + 2 * w + position % 2


def visible_units_raster(hidden: jax.Array) -> jax.Array:
  """[B, G] shown units in raster order of the unit grid (the order of `hidden == 0`)."""
  return jnp.sort(visible_units(hidden), axis=1)


def hidden_units(hidden: jax.Array) -> jax.Array:
  """[B, 3G] raster index of the hidden units, in raster order."""
  b = hidden.shape[0]
  flat = hidden.reshape(b, -1)
  return jnp.argsort(1 - flat, axis=1, stable=True)[:, :flat.shape[1] - num_groups(
      hidden.shape[1])]


def compaction_index(units: jax.Array, grid: int, k: int) -> jax.Array:
  """[B, G] shown units -> [B, (g/2 k)^2] flat index into the [g k, g k] token grid.

  Entry (R, C) of the compact grid (raster order) is token (R % k, C % k) of the unit shown by
  group (R // k, C // k).
  """
  side = grid // 2 * k
  rows, cols = np.divmod(np.arange(side * side), side)
  group = (rows // k) * (grid // 2) + cols // k  # [N] static
  unit = units[:, group]  # [B, N]
  unit_row, unit_col = jnp.divmod(unit, grid)
  return (unit_row * k + rows % k) * (grid * k) + unit_col * k + cols % k


def compact(x: jax.Array, index: jax.Array) -> jax.Array:
  """[B, H, W, C] tokens at `index` [B, N] (N = n^2) -> [B, n, n, C]."""
  b, h, w, c = x.shape
  side = int(round(index.shape[1]**0.5))
  out = jnp.take_along_axis(x.reshape(b, h * w, c), index[..., None], axis=1)
  return out.reshape(b, side, side, c)


def token_coordinates(index: jax.Array, full_side: int) -> jax.Array:
  """[B, N] flat token index -> [B, n, n, 2] float32 (row, col) on the full token grid."""
  side = int(round(index.shape[1]**0.5))
  rows, cols = jnp.divmod(index, full_side)
  return jnp.stack([rows, cols], -1).astype(jnp.float32).reshape(-1, side, side, 2)


def uncompact(y: jax.Array, hidden: jax.Array, k: int, fill=0.0) -> jax.Array:
  """Inverse of `compact`: [B, n, n, C] compact tokens -> [B, g k, g k, C], `fill` at hidden
  units. A gather: token (r, c) of a shown unit sits at its group's place, same offset."""
  b, n, _, c = y.shape
  grid = hidden.shape[1]
  full = grid * k
  rows, cols = np.divmod(np.arange(full * full), full)
  source = (rows // k // 2 * k + rows % k) * n + cols // k // 2 * k + cols % k  # [F] static
  out = jnp.take(y.reshape(b, n * n, c), jnp.asarray(source), axis=1)
  shown = (hidden.reshape(b, -1)[:, (rows // k) * grid + cols // k] == 0)[..., None]
  return jnp.where(shown, out, fill).reshape(b, full, full, c)


def upsample(mask: jax.Array, factor: int) -> jax.Array:
  """[B, g, g] -> [B, g f, g f], nearest neighbour."""
  return jnp.repeat(jnp.repeat(mask, factor, axis=1), factor, axis=2)
