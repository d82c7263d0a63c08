"""RandAugment (timm's rand-m9-mstd0.5-inc1) in TensorFlow: PIL's ops, the policy, determinism."""
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

tf = pytest.importorskip('tensorflow')

from mixmae_jax.data import rand_augment  # pylint: disable=wrong-import-position
from mixmae_jax.data.rand_augment import (INCREASING_OPS, RandAugmentPolicy, apply_op,  # pylint: disable=wrong-import-position
                                     parse_policy)

FILL = rand_augment.IMAGENET_FILL


def _picture(seed=0, size=(40, 48)):
  """A smooth random picture with a limited value range, so autocontrast/equalize have work."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(40, 200, (5, 6, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(coarse).resize(size[::-1], Image.BILINEAR))


def _ours(image, name, magnitude, sign=1.0):
  return apply_op(tf.constant(image), name, magnitude, sign).numpy()


def _pil(image, fn):
  return np.asarray(fn(Image.fromarray(image)))


def test_policy_string_reads_like_timm():
  p = parse_policy('rand-m9-mstd0.5-inc1')
  assert (p.num_ops, p.magnitude, p.magnitude_std, p.increasing) == (2, 9.0, 0.5, True)
  assert p.op_names == INCREASING_OPS and len(INCREASING_OPS) == 15
  assert parse_policy('rand-n3-m7').num_ops == 3 and not parse_policy('rand-m7').increasing
  assert math.isinf(parse_policy('rand-m9-mstd101').magnitude_std)
  for bad in ('auto-m9', 'rand-x9', 'rand-m9-w0'):
    with pytest.raises(ValueError, match='RandAugment policy'):
      parse_policy(bad)


@pytest.mark.parametrize('name,magnitude,reference', [
    ('AutoContrast', 9, ImageOps.autocontrast),
    ('Equalize', 9, ImageOps.equalize),
    ('Invert', 9, ImageOps.invert),
    ('PosterizeIncreasing', 9, lambda im: ImageOps.posterize(im, 4 - int(0.9 * 4))),
    ('Posterize', 9, lambda im: ImageOps.posterize(im, int(0.9 * 4))),
    ('SolarizeIncreasing', 9, lambda im: ImageOps.solarize(im, 256 - int(0.9 * 256))),
    ('Solarize', 6, lambda im: ImageOps.solarize(im, int(0.6 * 256))),
])
def test_pixel_ops_equal_pil(name, magnitude, reference):
  image = _picture()
  np.testing.assert_array_equal(_ours(image, name, magnitude), _pil(image, reference))


def test_solarize_add_equals_timms_lookup_table():
  image = _picture()
  add = int(0.9 * 110)
  expected = np.where(image < 128, np.minimum(image.astype(int) + add, 255), image)
  np.testing.assert_array_equal(_ours(image, 'SolarizeAdd', 9), expected)


@pytest.mark.parametrize('name,enhancer', [('ColorIncreasing', ImageEnhance.Color),
                                           ('ContrastIncreasing', ImageEnhance.Contrast),
                                           ('BrightnessIncreasing', ImageEnhance.Brightness),
                                           ('SharpnessIncreasing', ImageEnhance.Sharpness)])
@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_enhance_ops_match_pil_within_one_level(name, enhancer, sign):
  image = _picture(1)
  factor = max(0.1, 1.0 + sign * 0.9 * 0.9)  # timm's increasing level at magnitude 9
  diff = np.abs(_ours(image, name, 9, sign).astype(int) -
                _pil(image, lambda im: enhancer(im).enhance(factor)).astype(int))
  assert diff.max() <= 1, diff.max()


@pytest.mark.parametrize('name,coeffs', [
    ('ShearX', (1, 0.27, 0, 0, 1, 0)), ('ShearY', (1, 0, 0, 0.27, 1, 0)),
    ('TranslateXRel', (1, 0, 0.405 * 48, 0, 1, 0)), ('TranslateYRel', (1, 0, 0, 0, 1, 0.405 * 40)),
])
def test_geometric_ops_follow_pils_affine_map(name, coeffs):
  image = _picture(2)
  ours = _ours(image, name, 9).astype(int)
  theirs = _pil(image, lambda im: im.transform(im.size, Image.AFFINE, coeffs,
                                               resample=Image.BILINEAR, fillcolor=FILL)).astype(int)
  assert np.mean(np.abs(ours - theirs)) < 2.0  # bilinear both; borders may differ by a pixel


def test_rotate_turns_about_the_centre_and_fills_with_the_mean_colour():
  image = np.zeros((41, 41, 3), np.uint8)
  image[20, 25:] = 255  # a ray to the right of the centre
  out = _ours(image, 'Rotate', 10.0)  # +30 degrees: counter-clockwise, like PIL
  theirs = _pil(image, lambda im: im.rotate(30, resample=Image.BILINEAR, fillcolor=FILL))
  assert np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])[0] < 20  # the ray goes up
  assert np.mean(np.abs(out.astype(int) - theirs.astype(int))) < 3.0
  np.testing.assert_array_equal(out[0, 0], FILL)  # a corner uncovered by the rotation


def test_rand_augment_is_deterministic_per_seed_and_keeps_shape_and_dtype():
  image = tf.constant(_picture(3, (64, 64)))
  policy = parse_policy('rand-m9-mstd0.5-inc1')
  outs = [rand_augment.rand_augment(image, tf.constant([0, s], tf.int64), policy).numpy()
          for s in (1, 1, 2, 3, 4, 5)]
  assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outs)
  np.testing.assert_array_equal(outs[0], outs[1])
  changed = [not np.array_equal(o, image.numpy()) for o in outs[2:]]
  assert sum(changed) >= 2  # each op applies with prob 1/2: most seeds change the image
  assert len({o.tobytes() for o in outs[1:]}) >= 4


def test_ops_are_drawn_uniformly_and_applied_half_the_time():
  image = tf.constant(_picture(4, (16, 16)))
  policy = RandAugmentPolicy(num_ops=1, magnitude=9, magnitude_std=0.0)
  unchanged = np.mean([np.array_equal(
      rand_augment.rand_augment(image, tf.constant([7, s], tf.int64), policy).numpy(),
      image.numpy()) for s in range(120)])
  assert 0.4 < unchanged < 0.7  # 1/2 not applied, plus ops that leave this picture alone
