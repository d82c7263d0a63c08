"""The cheaper decodes: DCT-scaled JPEG crops and the bilinear resize stay close to today's."""
import io

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip('tensorflow')
from mixmae_jax.data import image_decoding  # noqa: E402  pylint: disable=wrong-import-position


def _jpeg(h: int, w: int) -> bytes:
  """A smooth photo-like JPEG: gradients plus a few soft blobs."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  image = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(6 * x) * np.cos(4 * y)], -1)
  buffer = io.BytesIO()
  Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(buffer, 'JPEG', quality=95)
  return buffer.getvalue()


@pytest.mark.parametrize('shorter, size, expected', [(100, 64, 0), (128, 64, 1), (255, 64, 1),
                                                      (256, 64, 2), (512, 64, 3), (4096, 64, 3)])
def test_the_scale_is_the_largest_that_keeps_the_crop_at_least_the_output(shorter, size,
                                                                          expected):
  index = image_decoding.dct_scale_index(tf.constant(shorter), tf.constant(shorter + 7), size)
  assert int(index) == expected


def test_a_large_crop_decoded_at_reduced_scale_looks_like_the_full_decode():
  data = tf.constant(_jpeg(640, 800))
  seed = tf.constant([3, 4], tf.int64)
  args = dict(scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3), hflip=False)
  full = image_decoding.training_crop(data, seed, 64, **args).numpy().astype(int)
  scaled = image_decoding.training_crop(data, seed, 64, dct_scaled=True, **args).numpy()
  assert scaled.shape == full.shape == (64, 64, 3)
  difference = np.abs(scaled.astype(int) - full)
  assert 0 < difference.mean() < 3  # not the same decode, but the same picture


def test_small_crops_and_other_formats_are_decoded_as_today():
  data = tf.constant(_jpeg(96, 96))  # every crop is under twice the output: full scale
  seed = tf.constant([1, 2], tf.int64)
  args = dict(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), hflip=True)
  np.testing.assert_array_equal(
      image_decoding.training_crop(data, seed, 64, dct_scaled=True, **args),
      image_decoding.training_crop(data, seed, 64, **args))


def test_bilinear_resize_stays_within_a_few_grey_levels_of_bicubic():
  data = tf.constant(_jpeg(300, 400))
  seed = tf.constant([5, 6], tf.int64)
  args = dict(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), hflip=False)
  bicubic = image_decoding.training_crop(data, seed, 64, **args).numpy().astype(int)
  bilinear = image_decoding.training_crop(data, seed, 64, resize_method='bilinear',
                                          **args).numpy().astype(int)
  assert 0 < np.abs(bicubic - bilinear).mean() < 3
