"""UM-MAE's masks and gathers: the laws of uniform sampling and secondary masking, compaction and
un-compaction as inverse gathers, and the decoder's position orders, against numpy loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.objectives import ummae
from mixmae_jax.objectives import uniform_masking as um


def _groups(mask):
  """[B, g, g] -> [B, g/2, g/2, 4] the four units of every group, (0,0), (0,1), (1,0), (1,1)."""
  b, g, _ = mask.shape
  return mask.reshape(b, g // 2, 2, g // 2, 2).transpose(0, 1, 3, 2, 4).reshape(b, g // 2,
                                                                                g // 2, 4)


@pytest.mark.parametrize('sampling', um.SAMPLINGS)
def test_one_shown_unit_per_group_per_image(sampling):
  masks = np.asarray(um.draw_uniform_mask(jax.random.PRNGKey(0), 32, 16, sampling))
  assert masks.dtype == np.int32 and masks.shape == (32, 16, 16)
  assert np.all(_groups(masks).sum(-1) == 3)  # exactly one 0 in every 2x2 group
  assert np.all(masks.reshape(32, -1).sum(1) == 192)  # 64 shown of 256
  assert len({m.tobytes() for m in masks}) == 32  # per image, not per batch


def test_balanced_pool_caps_each_position_and_independent_draws_do_not():
  """The official pool holds each position ceil(G/2) times: with G = 4 groups no image shows
  the same position three times; independent draws do, in (4 x 4 x 3 + 4) / 4^4 = 20% of images."""
  assert list(um.balanced_pool(4)) == [0, 1, 2, 3, 0, 1, 2, 3]
  assert len(um.balanced_pool(64)) == 128  # the official 128 patterns for 256 units
  counts = {}
  for sampling in um.SAMPLINGS:
    positions = np.asarray(um.draw_positions(jax.random.PRNGKey(1), 4000, 4, sampling))
    counts[sampling] = np.stack([(positions == p).sum(1) for p in range(4)], -1)  # [B, 4]
    # every position is shown a quarter of the time in every group
    np.testing.assert_allclose(np.mean(positions[..., None] == np.arange(4), axis=0), 0.25,
                               atol=0.03)
  assert counts['balanced'].max() == 2
  assert 0.17 < np.mean(counts['independent'].max(-1) >= 3) < 0.24


def test_masks_are_a_function_of_the_key_so_a_resumed_run_draws_the_same():
  a = um.draw_uniform_mask(jax.random.PRNGKey(5), 4, 16)
  b = um.draw_uniform_mask(jax.random.PRNGKey(5), 4, 16)
  c = um.draw_uniform_mask(jax.random.PRNGKey(6), 4, 16)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  s1 = um.draw_secondary_mask(jax.random.PRNGKey(7), a, 0.25)
  s2 = um.draw_secondary_mask(jax.random.PRNGKey(7), b, 0.25)
  np.testing.assert_array_equal(s1, s2)


def test_secondary_masking_swaps_a_quarter_of_the_shown_units():
  hidden = um.draw_uniform_mask(jax.random.PRNGKey(2), 500, 16)
  secondary = np.asarray(um.draw_secondary_mask(jax.random.PRNGKey(3), hidden, 0.25))
  hidden = np.asarray(hidden)
  assert um.num_secondary_kept(16, 0.25) == 48
  assert np.all(secondary.reshape(500, -1).sum(1) == 16)  # 64 - int(64 x 0.75)
  assert not np.any(secondary & hidden)  # only shown units are swapped
  # uniformly over the shown units: each shown unit is swapped a quarter of the time
  rate = secondary.sum(0) / np.maximum((1 - hidden).sum(0), 1)
  np.testing.assert_allclose(rate.mean(), 0.25, atol=0.01)
  assert rate.min() > 0.1 and rate.max() < 0.4
  assert np.all(np.asarray(um.draw_secondary_mask(jax.random.PRNGKey(3), jnp.asarray(hidden),
                                                  0.0)) == 0)


def _numpy_compaction(x, hidden, k):
  """The shown unit of every group, its k x k tokens in place, at the group's place."""
  b, g, _ = hidden.shape
  out = np.zeros((b, g // 2 * k, g // 2 * k, x.shape[-1]), x.dtype)
  coords = np.zeros(out.shape[:3] + (2,), np.float32)
  for n in range(b):
    for gr in range(g // 2):
      for gc in range(g // 2):
        (i, j), = [(i, j) for i in range(2) for j in range(2) if hidden[n, 2 * gr + i,
                                                                        2 * gc + j] == 0]
        rows = slice((2 * gr + i) * k, (2 * gr + i + 1) * k)
        cols = slice((2 * gc + j) * k, (2 * gc + j + 1) * k)
        out[n, gr * k:(gr + 1) * k, gc * k:(gc + 1) * k] = x[n, rows, cols]
        r, c = np.meshgrid(np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop),
                           indexing='ij')
        coords[n, gr * k:(gr + 1) * k, gc * k:(gc + 1) * k] = np.stack([r, c], -1)
  return out, coords


def test_compaction_is_a_gather_with_the_coordinates_travelling_along():
  k, g = 4, 8
  hidden = np.asarray(um.draw_uniform_mask(jax.random.PRNGKey(4), 3, g))
  x = np.random.default_rng(0).normal(size=(3, g * k, g * k, 5)).astype(np.float32)
  index = um.compaction_index(um.visible_units(jnp.asarray(hidden)), g, k)
  compact = np.asarray(um.compact(jnp.asarray(x), index))
  coords = np.asarray(um.token_coordinates(index, g * k))
  want, want_coords = _numpy_compaction(x, hidden, k)
  np.testing.assert_array_equal(compact, want)
  np.testing.assert_array_equal(coords, want_coords)


def test_uncompaction_is_the_inverse_gather():
  k, g = 2, 8
  hidden = um.draw_uniform_mask(jax.random.PRNGKey(8), 2, g)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, g * k, g * k, 3)), jnp.float32)
  index = um.compaction_index(um.visible_units(hidden), g, k)
  back = np.asarray(um.uncompact(um.compact(x, index), hidden, k, fill=np.nan))
  shown = np.asarray(um.upsample(1 - hidden, k), bool)
  np.testing.assert_array_equal(back[shown], np.asarray(x)[shown])
  assert np.all(np.isnan(back[~shown]))
  y = jnp.asarray(np.random.default_rng(2).normal(size=(2, g // 2 * k, g // 2 * k, 3)),
                  jnp.float32)
  np.testing.assert_array_equal(um.compact(um.uncompact(y, hidden, k), index), y)


def test_hidden_units_are_in_raster_order():
  hidden = um.draw_uniform_mask(jax.random.PRNGKey(9), 3, 16)
  got = np.asarray(um.hidden_units(hidden))
  for n in range(3):
    np.testing.assert_array_equal(got[n], np.flatnonzero(np.asarray(hidden[n]).reshape(-1)))


def test_correct_order_gives_each_token_its_own_unit_and_the_official_order_does_not():
  """The decoder's shown tokens come from a 2x pixel shuffle of the last stage: token t belongs to
  group t (raster order). 'correct' gives it the position of the unit group t shows; 'official'
  that of the t-th shown unit in raster order of the unit grid, which is another unit for most
  tokens."""
  g = 16
  hidden = um.draw_uniform_mask(jax.random.PRNGKey(10), 50, g)
  correct = np.asarray(ummae.decoder_positions(hidden, 'correct'))
  official = np.asarray(ummae.decoder_positions(hidden, 'official'))
  h = np.asarray(hidden)
  for n in range(3):
    for t in range(64):
      gr, gc = divmod(t, g // 2)
      unit = correct[n, t]
      assert divmod(unit, g)[0] // 2 == gr and divmod(unit, g)[1] // 2 == gc  # in group t
      assert h[n].reshape(-1)[unit] == 0  # and shown
    np.testing.assert_array_equal(official[n], np.flatnonzero(h[n].reshape(-1) == 0))
  moved = np.mean(correct != official)
  assert 0.6 < moved < 0.9  # SPEC: about 75% of the tokens get another unit's embedding
  assert np.abs(official // g - correct // g).max() <= 1  # the row error is at most one unit


def test_pixel_shuffle_splits_channels_as_pytorch():
  x = np.random.default_rng(3).normal(size=(2, 3, 4, 5 * 4)).astype(np.float32)
  out = np.asarray(ummae.pixel_shuffle(jnp.asarray(x), 2))
  for h in range(3):
    for w in range(4):
      for i in range(2):
        for j in range(2):
          np.testing.assert_array_equal(out[:, 2 * h + i, 2 * w + j],
                                        x[:, h, w, [c * 4 + i * 2 + j for c in range(5)]])
