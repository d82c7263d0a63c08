"""On-device augmentation: label smoothing, Mixup/CutMix label mass, random erasing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.evaluation.classification_step import DeviceAugment, augment_batch
from mixmae_jax.evaluation.mixup import MixupSettings, cutmix_box, mix_batch, smoothed_targets
from mixmae_jax.evaluation.random_erasing import random_erase

B, S, K = 8, 32, 10


def _batch():
  images = jnp.arange(B, dtype=jnp.float32)[:, None, None, None] * jnp.ones((B, S, S, 3))
  labels = jnp.arange(B) % K
  return images, labels


def test_label_smoothing_puts_the_timm_mass_on_each_class():
  t = np.asarray(smoothed_targets(jnp.array([3, 0]), K, 0.1))
  np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
  assert t[0, 3] == pytest.approx(1 - 0.1 + 0.1 / K)
  assert t[0, 0] == pytest.approx(0.1 / K) and t[1, 0] == pytest.approx(1 - 0.1 + 0.1 / K)


@pytest.mark.parametrize('seed', range(6))
def test_cutmix_weights_are_the_pasted_pixel_areas(seed):
  images, labels = _batch()
  settings = MixupSettings(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
  mixed, targets = mix_batch(jax.random.PRNGKey(seed), images, smoothed_targets(labels, K, 0.0),
                             settings)
  mixed, targets = np.asarray(mixed), np.asarray(targets)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  for i in range(B):
    partner = B - 1 - i
    from_partner = np.mean(mixed[i, :, :, 0] == partner)  # image i's pixels all equal i
    assert targets[i, labels[partner]] == pytest.approx(from_partner, abs=1e-6)
    assert targets[i, labels[i]] == pytest.approx(1 - from_partner, abs=1e-6)


def test_cutmix_box_area_follows_lambda():
  for lam in (0.3, 0.5, 0.9):
    inside, corrected = cutmix_box(jax.random.PRNGKey(0), jnp.float32(lam), 200, 200)
    area = float(np.mean(np.asarray(inside)))
    assert corrected == pytest.approx(1 - area, abs=1e-6)
    # box sides int(200 sqrt(1 - lam)), clipped at the borders: at most the unclipped area
    assert area <= (int(200 * np.sqrt(1 - lam)) / 200)**2 + 1e-6


@pytest.mark.parametrize('seed', range(4))
def test_mixup_blends_pixels_and_labels_with_one_lambda(seed):
  images, labels = _batch()
  settings = MixupSettings(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
  mixed, targets = mix_batch(jax.random.PRNGKey(seed), images, smoothed_targets(labels, K, 0.1),
                             settings)
  mixed, targets = np.asarray(mixed), np.asarray(targets)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-5)
  lam = 1 - mixed[0, 0, 0, 0] / (B - 1)  # image 0 (value 0) blended with image B-1
  for i in range(B):
    np.testing.assert_allclose(mixed[i], lam * i + (1 - lam) * (B - 1 - i), rtol=1e-5,
                               atol=1e-5)
    on, off = 1 - 0.1 + 0.1 / K, 0.1 / K
    assert targets[i, labels[i]] == pytest.approx(lam * on + (1 - lam) * off, abs=1e-5)


def test_switch_probability_picks_cutmix_about_half_the_time():
  images, labels = _batch()
  targets = smoothed_targets(labels, K, 0.0)
  settings = MixupSettings(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
  draws = jax.vmap(lambda k: mix_batch(k, images, targets, settings)[0])(
      jax.random.split(jax.random.PRNGKey(0), 200))
  # CutMix leaves pixels that are exactly an integer (an image's own or its partner's value)
  cutmix = np.all(np.isin(np.asarray(draws[:, 0]), np.arange(B)), axis=(1, 2, 3))
  assert 0.35 < cutmix.mean() < 0.65


def test_mix_prob_zero_leaves_the_batch_alone():
  images, labels = _batch()
  targets = smoothed_targets(labels, K, 0.1)
  mixed, out = mix_batch(jax.random.PRNGKey(0), images, targets, MixupSettings(prob=0.0))
  np.testing.assert_array_equal(mixed, images)
  np.testing.assert_allclose(out, targets)


def test_random_erasing_fills_the_expected_share_with_noise():
  images = jnp.full((400, 32, 32, 3), 7.0)
  out = np.asarray(random_erase(jax.random.PRNGKey(0), images, prob=0.25))
  erased = np.any(out != 7.0, axis=-1)  # [N, H, W]
  touched = erased.any(axis=(1, 2))
  assert 0.18 < touched.mean() < 0.32  # prob 0.25 (a box that never fits is rare at 32x32)
  areas = erased[touched].mean(axis=(1, 2))
  assert 0.015 < areas.min() and areas.max() < 0.4  # area U(0.02, 1/3), rounded sides
  assert 0.12 < areas.mean() < 0.22  # the mean of U(0.02, 1/3) is 0.18
  for i in np.flatnonzero(touched)[:20]:  # one axis-aligned box per image
    rows, cols = np.flatnonzero(erased[i].any(1)), np.flatnonzero(erased[i].any(0))
    assert erased[i].sum() == len(rows) * len(cols)
  noise = out[erased]
  assert abs(noise.mean()) < 0.05 and 0.9 < noise.std() < 1.1
  np.testing.assert_array_equal(random_erase(jax.random.PRNGKey(0), images, prob=0.0), images)


def test_augment_batch_is_deterministic_per_key_and_keeps_label_mass():
  images, labels = _batch()
  augment = DeviceAugment(MixupSettings(), erase_prob=0.5)
  a = augment_batch(jax.random.PRNGKey(1), images, labels, K, augment)
  b = augment_batch(jax.random.PRNGKey(1), images, labels, K, augment)
  c = augment_batch(jax.random.PRNGKey(2), images, labels, K, augment)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  np.testing.assert_allclose(np.asarray(a[1]).sum(-1), 1.0, rtol=1e-5)
