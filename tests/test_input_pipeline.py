"""The tf.data input pipeline: shapes, determinism, exact resume, sharding, bad files, TFDS."""
import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')

from mixmae_jax.data import pixels
from mixmae_jax.data import pretraining as input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from mixmae_jax.training.config_defaults import data_fields  # pylint: disable=wrong-import-position

SIZE = 32
MAGENTA = (255, 0, 255)


def _texture(seed: int, height: int, width: int) -> np.ndarray:
  """A smooth random picture, uint8 `[height, width, 3]` (noise would not survive a crop)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _write(path, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def _textures_folder(root, count: int):
  """`count` textured JPEGs of varied sizes, in nested folders with mixed-case extensions."""
  for i in range(count):
    image = Image.fromarray(_texture(i, 40 + 3 * i, 56 - 2 * i))
    ext = ('jpg', 'JPEG', 'jpeg')[i % 3]
    _write(os.path.join(root, f'class{i % 2}', f'img{i:02d}.{ext}'), _encode(image, 'JPEG'))
  return str(root)


def _colors_folder(root, count: int):
  """`count` solid-colour PNGs: every crop of one is that colour, so outputs name their file."""
  for i in range(count):
    image = Image.new('RGB', (24 + i, 20), (10 * i, 255 - 10 * i, 100))
    _write(os.path.join(root, f'c{i:02d}.png'), _encode(image, 'PNG'))
  return str(root)


def _config(folder: str = '', **overrides):
  data = data_fields()
  data.image_folder = folder
  for name, value in overrides.items():
    setattr(data, name, value)
  return data


def _stream(data, batches: int, **kwargs):
  kwargs.setdefault('image_size', SIZE)
  kwargs.setdefault('per_host_batch', 4)
  kwargs.setdefault('seed', 0)
  pipeline = input_pipeline.PretrainingInput(data, **kwargs)
  return pipeline, [next(pipeline)['image'] for _ in range(batches)]


def _color_ids(images: np.ndarray, count: int) -> list:
  """Which file of `_colors_folder` each output image came from."""
  firsts = images[:, 0, 0].astype(np.int32)
  refs = np.array([(10 * i, 255 - 10 * i, 100) for i in range(count)], np.int32)
  ids = [int(np.argmin(np.abs(refs - pixel).sum(-1))) for pixel in firsts]
  for image, i in zip(images, ids):
    np.testing.assert_array_equal(image, np.broadcast_to(refs[i], image.shape))
  return ids


def test_tf_sees_no_accelerators():
  assert not tf.config.get_visible_devices('GPU')


def test_batch_shape_dtype_and_range(tmp_path):
  data = _config(_textures_folder(tmp_path, 6))
  pipeline, (batch,) = _stream(data, 1, per_host_batch=5)
  assert batch.shape == (5, SIZE, SIZE, 3) and batch.dtype == np.uint8
  assert batch.std() > 10  # textures, not a constant
  assert pipeline.position == 5 and pipeline.skipped == 0
  assert pipeline.examples_per_epoch == 6 and pipeline.epoch == pytest.approx(5 / 6)


def test_pixels_are_exact_and_normalize_as_configured(tmp_path):
  _write(str(tmp_path / 'solid.png'), _encode(Image.new('RGB', (30, 20), (200, 100, 50)), 'PNG'))
  data = _config(str(tmp_path))
  _, (batch,) = _stream(data, 1, per_host_batch=3)
  np.testing.assert_array_equal(batch, np.broadcast_to([200, 100, 50], batch.shape))
  expected = (np.array([200, 100, 50]) / 255 - np.array(data.mean)) / np.array(data.std)
  np.testing.assert_allclose(pixels.normalize(batch, data.mean, data.std)[0, 0, 0], expected,
                             rtol=1e-5)


def test_same_seed_same_batches_other_seed_differs(tmp_path):
  data = _config(_textures_folder(tmp_path, 6))
  _, first = _stream(data, 3)
  _, again = _stream(data, 3)
  _, other = _stream(data, 3, seed=1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_resume_gives_the_same_batches(tmp_path):
  data = _config(_textures_folder(tmp_path, 7))  # 5 batches of 4 span three epochs of 7
  full, batches = _stream(data, 5)
  head, _ = _stream(data, 2)
  resumed, tail = _stream(data, 3, start_position=head.position)
  for a, b in zip(batches[2:], tail):
    np.testing.assert_array_equal(a, b)
  assert resumed.position == full.position == 20


def test_each_epoch_is_a_fresh_permutation(tmp_path):
  data = _config(_colors_folder(tmp_path, 8))
  _, batches = _stream(data, 4)
  ids = _color_ids(np.concatenate(batches), 8)
  assert sorted(ids[:8]) == sorted(ids[8:]) == list(range(8))
  assert ids[:8] != ids[8:]


def test_hosts_get_disjoint_files(tmp_path):
  data = _config(_colors_folder(tmp_path, 9))
  seen = []
  for host in range(3):
    pipeline, batches = _stream(data, 3, host_index=host, host_count=3, per_host_batch=2)
    assert pipeline.examples_per_epoch == 3
    ids = _color_ids(np.concatenate(batches), 9)
    assert sorted(ids[:3]) == sorted(ids[3:6]) == list(range(host, 9, 3))
    seen.extend(ids[:3])
  assert sorted(seen) == list(range(9))


def test_crop_windows_follow_scale_and_ratio():
  from mixmae_jax.data import image_decoding  # pylint: disable=g-import-not-at-top
  shape = tf.constant([375, 500, 3])
  for i in range(100):
    y, x, h, w = image_decoding.random_crop_window(
        shape, tf.constant([i, 7], tf.int64), (0.2, 1.0), (3 / 4, 4 / 3)).numpy()
    assert 0 <= y and y + h <= 375 and 0 <= x and x + w <= 500
    assert 0.2 - 0.01 <= h * w / (375 * 500) <= 1.0
    assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


@pytest.mark.parametrize('hflip', [False, True])
def test_flips_follow_the_config(tmp_path, hflip):
  halves = np.zeros((24, 32, 3), np.uint8)
  halves[:, 16:] = 255  # dark left half, bright right half
  _write(str(tmp_path / 'halves.png'), _encode(Image.fromarray(halves), 'PNG'))
  data = _config(str(tmp_path), crop_scale=(1.0, 1.0), crop_ratio=(32 / 24, 32 / 24),
                 hflip=hflip)  # the crop is the whole image
  _, (batch,) = _stream(data, 1, per_host_batch=32)
  flipped = batch[:, :, 0].mean(axis=(1, 2)) > batch[:, :, -1].mean(axis=(1, 2))
  assert 8 < flipped.sum() < 24 if hflip else not flipped.any()


def _bad_files_folder(root, markers: bool) -> str:
  """Good files of awkward kinds plus four undecodable ones (or magenta stand-ins for them)."""
  texture = Image.fromarray(_texture(7, 64, 64))
  cut = _encode(Image.fromarray(_texture(8, 64, 80)), 'JPEG')
  files = {
      'good0.jpg': _encode(texture, 'JPEG'),
      'good1.JPEG': _encode(Image.fromarray(_texture(9, 50, 70)), 'JPEG'),
      'gray.jpg': _encode(texture.convert('L'), 'JPEG'),
      'cmyk.jpg': _encode(texture.convert('CMYK'), 'JPEG'),
      'png_named.JPEG': _encode(texture, 'PNG'),
      'tiny.jpg': _encode(Image.new('RGB', (1, 1), (30, 60, 90)), 'JPEG'),
      'tiny22.jpg': _encode(Image.new('RGB', (2, 2), (60, 30, 90)), 'JPEG'),
      'tiny53.png': _encode(Image.new('RGB', (5, 3), (90, 60, 30)), 'PNG'),
      'alpha.webp': _encode(texture.convert('RGBA'), 'WEBP'),  # TF refuses it as 3 channels
  }
  bad = {
      'empty.jpg': b'',
      'random.jpg': np.random.default_rng(0).bytes(2000),
      'text.jpg': b'this is a text file, not a picture\n',
      'truncated.jpg': cut[:len(cut) // 2],
  }
  magenta = _encode(Image.new('RGB', (8, 8), MAGENTA), 'PNG')
  files.update({name: magenta if markers else data for name, data in bad.items()})
  for name, data in files.items():
    _write(os.path.join(root, name), data)
  return str(root)


def test_undecodable_files_are_skipped_and_counted(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  data = _config(_bad_files_folder(tmp_path / 'bad', markers=False))
  bad, batches = _stream(data, 6)
  # The same names with every bad file replaced by a magenta PNG give the same permutation, so
  # magenta marks where the bad files sit in the stream.
  clean = _config(_bad_files_folder(tmp_path / 'clean', markers=True))
  _, reference = _stream(clean, 12)
  reference = np.concatenate(reference)
  is_marker = np.all(reference == np.array(MAGENTA, np.uint8), axis=(1, 2, 3))
  good = np.flatnonzero(~is_marker)[:24]
  np.testing.assert_array_equal(np.concatenate(batches), reference[good])
  assert bad.position == good[-1] + 1
  # Each epoch meets every bad file again: several skips each, four files counted, all named.
  assert int(is_marker[:bad.position].sum()) > 4
  names = ['empty.jpg', 'random.jpg', 'text.jpg', 'truncated.jpg']
  assert bad.skipped == 4 and sorted(map(os.path.basename, bad.skipped_names)) == names
  assert '(4 distinct so far)' in caplog.text and 'truncated.jpg' in caplog.text
  first = _stream(data, 3)[0]
  resumed, tail = _stream(data, 3, start_position=first.position, skipped_before=first.skipped,
                          known_skipped_ids=first.skipped_ids)
  for a, b in zip(batches[3:], tail):
    np.testing.assert_array_equal(a, b)
  assert resumed.position == bad.position
  assert resumed.skipped == 4  # what the first part had seen is not counted again


def test_rgba_webp_decodes_to_rgb_dropping_alpha():
  rgba = np.concatenate([_texture(3, 20, 24), np.full((20, 24, 1), 7, np.uint8)], axis=-1)
  data = _encode(Image.fromarray(rgba, 'RGBA'), 'WEBP', lossless=True)
  from mixmae_jax.data import image_decoding  # pylint: disable=import-outside-toplevel
  decoded = image_decoding.decode_any(tf.constant(data)).numpy()
  np.testing.assert_array_equal(decoded, rgba[..., :3])
  crop = image_decoding.training_crop(tf.constant(data), tf.constant([0, 1], tf.int64), 16,
                                      (0.5, 1.0), (0.75, 1.33), hflip=True)
  assert crop.shape == (16, 16, 3)


def test_folder_of_only_bad_files_fails_fast(tmp_path):
  _write(str(tmp_path / 'a.jpg'), b'')
  _write(str(tmp_path / 'b.png'), b'not a png')
  with pytest.raises(ValueError, match='can be decoded'):
    _stream(_config(str(tmp_path)), 1)


def test_missing_and_empty_folders_say_what_to_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match='data.image_folder'):
    input_pipeline.dataset_size(_config(str(tmp_path / 'nope')))
  _write(str(tmp_path / 'notes.txt'), b'no images here')
  with pytest.raises(ValueError, match=r'data.image_folder.*no images'):
    input_pipeline.PretrainingInput(_config(str(tmp_path)), image_size=SIZE, per_host_batch=2,
                                    seed=0)


def test_more_hosts_than_files_is_an_error(tmp_path):
  data = _config(_colors_folder(tmp_path, 2))
  with pytest.raises(ValueError, match='host 2 of 3'):
    _stream(data, 1, host_index=2, host_count=3)


def test_demo_images_are_the_default():
  data = _config()
  assert input_pipeline.dataset_size(data) == 64
  _, (batch,) = _stream(data, 1, image_size=48)
  assert batch.shape == (4, 48, 48, 3) and batch.std() > 20


def test_reconstruction_images_are_fixed(tmp_path):
  folder = _textures_folder(tmp_path / 'images', 3)
  first = input_pipeline.reconstruction_images(_config(folder), SIZE, 2)
  assert first.shape == (2, SIZE, SIZE, 3) and first.dtype == np.uint8
  _write(os.path.join(folder, 'class0', 'aaa_broken.jpg'), b'garbage')  # sorts first
  np.testing.assert_array_equal(first, input_pipeline.reconstruction_images(_config(folder),
                                                                            SIZE, 2))
  repeated = input_pipeline.reconstruction_images(_config(folder), SIZE, 5)
  np.testing.assert_array_equal(repeated[3:], repeated[:2])


def test_real_imagenet_samples(imagenet_samples):
  data = _config(str(imagenet_samples))
  assert input_pipeline.dataset_size(data) == len(os.listdir(imagenet_samples))
  pipeline, (batch,) = _stream(data, 1, image_size=64, per_host_batch=8)
  assert batch.shape == (8, 64, 64, 3) and pipeline.skipped == 0
  assert 60 < float(batch.mean()) < 190 and 30 < float(batch.std()) < 100


class MixmaeTestImages(tfds.core.GeneratorBasedBuilder):
  """20 textured JPEGs in a `train` split: a real (prepared) TFDS dataset, built offline."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = tfds.core.Path(os.path.dirname(os.path.abspath(__file__)))  # tests/ is no package

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(20):
      yield i, {'image': _texture(100 + i, 36 + i, 44), 'label': i % 2}


@pytest.fixture(scope='module')
def tfds_data(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  data = _config(tfds_name='mixmae_test_images', tfds_data_dir=str(root / 'data'),
                 shuffle_buffer=8)
  with pytest.raises(FileNotFoundError, match='tfds_manual_dir'):
    input_pipeline.dataset_size(data)
  data.tfds_manual_dir = str(root / 'manual')  # builds it, as imagenet2012 would be
  assert input_pipeline.dataset_size(data) == 20
  return data


def test_tfds_batches_determinism_and_resume(tfds_data):
  # 2 hosts x 10 images; 5 batches of 6 cross two epoch ends, so batches carry across epochs.
  host = dict(host_index=1, host_count=2, per_host_batch=6)
  full, batches = _stream(tfds_data, 5, **host)
  assert full.examples_per_epoch == 10 and full.position == 30 and full.skipped == 0
  assert batches[0].shape == (6, SIZE, SIZE, 3) and batches[0].dtype == np.uint8
  _, again = _stream(tfds_data, 5, **host)
  head, _ = _stream(tfds_data, 2, **host)
  _, tail = _stream(tfds_data, 3, start_position=head.position, **host)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(batches[2:], tail):
    np.testing.assert_array_equal(a, b)
  _, other_host = _stream(tfds_data, 1, **dict(host, host_index=0))
  assert not np.array_equal(other_host[0], batches[0])


def test_tfds_reconstruction_images(tfds_data):
  images = input_pipeline.reconstruction_images(tfds_data, SIZE, 3)
  assert images.shape == (3, SIZE, SIZE, 3)
  np.testing.assert_array_equal(images, input_pipeline.reconstruction_images(tfds_data, SIZE, 3))


def test_fused_jpeg_crop_equals_decoding_the_whole_image_then_cropping():
  """The fused decode reads the same window; libjpeg's chroma upsampling at the window's edge
  may move a few pixel values by a little."""
  from mixmae_jax.data import image_decoding  # pylint: disable=import-outside-toplevel
  files = sorted(os.listdir(input_pipeline.DEMO_IMAGES))[:8]
  for i, name in enumerate(files):
    data = tf.io.read_file(os.path.join(input_pipeline.DEMO_IMAGES, name))
    seed = tf.constant([3, i], tf.int64)
    fused, whole = (image_decoding.decode_and_random_crop(data, seed, (0.2, 1.0), (0.75, 4 / 3),
                                                          fused_jpeg=f).numpy()
                    for f in (True, False))
    assert fused.shape == whole.shape
    assert np.abs(fused.astype(np.int32) - whole).mean() < 0.1
