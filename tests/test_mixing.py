"""Masks, gather mixing/unmixing and same-source masks against the official blend formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.objectives import mixing


@pytest.mark.parametrize('grid,ratio', [(7, 0.5), (7, 0.75), (4, 0.5), (14, 0.3), (10, 0.7)])
def test_mask_has_exactly_int_l_times_r_ones(grid, ratio):
  for seed in range(5):
    mask = mixing.draw_mask(jax.random.PRNGKey(seed), grid, ratio)
    assert mask.shape == (grid, grid) and mask.dtype == jnp.int32
    assert int(mask.sum()) == int(grid * grid * ratio)  # 24 of 49 at r = 0.5
  assert int(mixing.draw_mask(jax.random.PRNGKey(0), 7, 0.5).sum()) == 24


def test_masks_differ_between_keys_and_repeat_for_a_key():
  a, b = (mixing.draw_mask(jax.random.PRNGKey(s), 7, 0.5) for s in (0, 1))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, mixing.draw_mask(jax.random.PRNGKey(0), 7, 0.5))


def test_range_mask_ratio_jitters_the_count_within_bounds_under_jit():
  draw = jax.jit(lambda k: mixing.draw_mask(k, 7, 0.5, range_mask_ratio=0.2).sum())
  counts = {int(draw(jax.random.PRNGKey(s))) for s in range(40)}
  assert min(counts) >= 24 and max(counts) <= int(49 * 0.7)
  assert len(counts) > 3


def test_stage_sources_are_nearest_upsamplings_of_the_unit_mask():
  mask = mixing.draw_mask(jax.random.PRNGKey(3), 7, 0.5)
  sources = mixing.stage_sources(mask, 4)
  assert [s.shape for s in sources] == [(56, 56), (28, 28), (14, 14), (7, 7)]
  for s in sources:
    f = s.shape[0] // 7
    for r in range(0, s.shape[0], 5):
      for c in range(0, s.shape[1], 3):
        assert s[r, c] == mask[r // f, c // f]


def _official_blend(x, m):  # x * (1 - m) + x.flip(0) * m, as in the official forward_encoder
  m = m.reshape(1, -1, 1).astype(x.dtype)
  return x * (1 - m) + x[::-1] * m


@pytest.mark.parametrize('batch', [2, 4, 6])
def test_gather_mixing_equals_the_official_blend(batch):
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, 49, 5))
  mask = mixing.draw_mask(jax.random.PRNGKey(1), 7, 0.5).reshape(-1)
  mixed = mixing.mix_tokens(x, mask, mixing.flip_pairing(batch))
  np.testing.assert_array_equal(mixed, _official_blend(x, mask))


@pytest.mark.parametrize('batch', [2, 4, 8])
def test_unmixing_equals_the_official_formula(batch):
  # official forward_loss: x1_rec * mask + x2_rec.flip(0) * (1 - mask)
  branches = jax.random.normal(jax.random.PRNGKey(0), (2, batch, 49, 3))
  mask = mixing.draw_mask(jax.random.PRNGKey(2), 7, 0.5).reshape(-1)
  m = mask.reshape(1, -1, 1).astype(jnp.float32)
  expected = branches[0] * m + branches[1][::-1] * (1 - m)
  got = mixing.unmix_dual(branches, mask, mixing.flip_pairing(batch))
  np.testing.assert_array_equal(got, expected)


def test_slot_members_inverts_a_rotation_group():
  b = 5
  group = jnp.stack([jnp.arange(b), (jnp.arange(b) + 1) % b], -1)  # slot 1 = next image
  members = mixing.slot_members(group)
  for j in range(b):
    for s in range(2):
      assert group[members[j, s], s] == j


def test_same_source_mask():
  src = jnp.array([0, 1, 1, 0])
  allowed = mixing.same_source(src)
  np.testing.assert_array_equal(allowed, np.equal.outer([0, 1, 1, 0], [0, 1, 1, 0]))
