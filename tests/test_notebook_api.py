"""What `mixmae_jax.load` returns in a notebook: preprocess, features, reconstruct and show, for
each kind of checkpoint, and a one-line error for each misuse a newcomer meets."""
import pathlib
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import mixmae_jax
from mixmae_jax import architectures
from mixmae_jax.training.checkpointing import Checkpointer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_releases  # noqa: E402  pylint: disable=wrong-import-position


def _checkpoint(path, arch):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(np.float32), shapes)
  ckpt = Checkpointer(str(path / 'checkpoints'), keep=None)
  ckpt.save(1, params, None, {'arch': architectures.to_dict(arch)})
  ckpt.wait()
  ckpt.close()
  return mixmae_jax.load(str(path))


@pytest.fixture(scope='module')
def mixmim(tmp_path_factory):
  return _checkpoint(tmp_path_factory.mktemp('mixmim'), tiny_releases.MIXMIM)


@pytest.fixture(scope='module')
def encoder_only(tmp_path_factory):
  return _checkpoint(tmp_path_factory.mktemp('vit'), tiny_releases.MAE_ENCODER)


def test_preprocess_takes_pil_images_arrays_and_floats(mixmim):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
  from_pil = mixmim.preprocess([Image.fromarray(photo)] * 2)
  assert from_pil.shape == (2, 64, 64, 3) and from_pil.dtype == np.float32
  np.testing.assert_allclose(mixmim.preprocess(np.stack([photo] * 2)), from_pil)
  np.testing.assert_allclose(mixmim.preprocess(photo / 255.0), from_pil[:1], atol=0.02)
  assert mixmim.preprocess(photo[..., :1]).shape == (1, 64, 64, 3)  # grey becomes RGB
  with pytest.raises(ValueError, match=r'images of shape \(5, 5\)'):
    mixmim.preprocess(np.zeros((5, 5)))


def test_features_pooled_and_per_token(mixmim, encoder_only):
  x = mixmim.preprocess(np.zeros((2, 64, 64, 3), np.uint8))
  assert mixmim.features(x).shape == (2, 64)
  assert mixmim.features(x, tokens=True).shape == (2, 2, 2, 64)  # Swin's last stage
  y = encoder_only.preprocess(np.zeros((2, 64, 64, 3), np.uint8))
  assert encoder_only.features(y).shape == (2, 16)
  assert encoder_only.features(y, tokens=True).shape[:2] == (2, 17)  # cls + 16 patches
  assert 'vit' in repr(encoder_only) and 'mixmae swin' in repr(mixmim)


def test_a_wrong_input_size_names_the_size_and_the_fix(mixmim):
  with pytest.raises(ValueError, match=r'takes normalized \[B, 64, 64, 3\] images, got '
                     r'\(2, 224, 224, 3\): pass them through .preprocess'):
    mixmim.features(np.zeros((2, 224, 224, 3), np.float32))
  with pytest.raises(ValueError, match='got uint8 pixels'):
    mixmim.features(np.zeros((2, 64, 64, 3), np.uint8))


def test_reconstruct_draws_a_documented_default_mask_and_says_when_a_group_is_short(mixmim):
  x = mixmim.preprocess(np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), np.uint8))
  first, again = mixmim.reconstruct(x), mixmim.reconstruct(x)
  np.testing.assert_array_equal(first['masks'], again['masks'])  # rng=0 unless told
  assert set(first) == {'originals', 'inputs', 'predictions', 'masks', 'loss'}
  assert first['predictions'].shape == (4, 64, 64, 3)
  other = mixmim.reconstruct(x, rng=5)['masks']
  given = mixmim.reconstruct(x, mask=1 - first['masks'])['masks']
  np.testing.assert_array_equal(given, 1 - first['masks'])
  assert other.shape == first['masks'].shape
  with pytest.raises(ValueError, match='mixmae needs a multiple of 2 images per call, got 1'):
    mixmim.reconstruct(x[:1])  # one image would be mixed with itself
  picture = mixmim.show(x)
  assert isinstance(picture, Image.Image) and picture.width == 4 * 64 + 3 * 4


def test_reconstruct_needs_a_decoder(encoder_only):
  x = encoder_only.preprocess(np.zeros((2, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match='holds a encoder, not a pretraining model'):
    encoder_only.reconstruct(x)
