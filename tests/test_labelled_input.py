"""Labelled input: ImageFolder and TFDS sources, the training stream, the evaluation view."""
import os

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')

from mixmae_jax.data import streams  # pylint: disable=wrong-import-position
from mixmae_jax.data import labelled as labelled_input  # pylint: disable=wrong-import-position
from mixmae_jax.evaluation.finetune_config import augment_fields, labelled_data_fields  # pylint: disable=wrong-import-position

SIZE = 32
COLORS = {'ant': (250, 10, 10), 'bee': (10, 250, 10), 'cat': (10, 10, 250)}


def _folder(root, per_class=(5, 3, 4), empty=()):
  """Solid-colour PNGs in one folder per class: every crop of an image shows its class."""
  for (name, color), count in zip(COLORS.items(), per_class):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(count):
      Image.new('RGB', (40 + 3 * i, 36), color).save(os.path.join(root, name, f'{i}.png'))
  for name in empty:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  return str(root)


def _config(train, val, **overrides):
  data = labelled_data_fields()
  data.train_folder, data.eval_folder = train, val
  for k, v in overrides.items():
    setattr(data, k, v)
  return data


def _augment(rand_augment=''):
  a = augment_fields()
  a.rand_augment = rand_augment
  return a


def _stream(data, n, rand_augment='', **kwargs):
  kwargs = dict(dict(image_size=SIZE, per_host_batch=4, seed=0), **kwargs)
  pipeline = labelled_input.LabelledTrainInput(data, _augment(rand_augment), **kwargs)
  return pipeline, [next(pipeline) for _ in range(n)]


def test_folder_labels_follow_sorted_class_folders(tmp_path):
  source = labelled_input.LabelledFolder(_folder(tmp_path, empty=('zebra', 'aardvark')),
                                         'data.train_folder')
  assert source.class_names == ['aardvark', 'ant', 'bee', 'cat', 'zebra']  # torchvision order
  assert source.size == 12 and source.num_classes == 5
  assert [source.labels[i] for i in (0, 5, 8)] == [1, 2, 3]


def test_folder_mistakes_say_what_to_fix(tmp_path):
  train = _folder(tmp_path / 'train')
  val = _folder(tmp_path / 'val')
  os.makedirs(tmp_path / 'val' / 'dog')
  Image.new('RGB', (8, 8)).save(tmp_path / 'val' / 'dog' / 'x.png')
  with pytest.raises(ValueError, match="classes the training folder lacks: \\['dog'\\]"):
    labelled_input.open_labelled(_config(train, val), train=False)
  Image.new('RGB', (8, 8)).save(tmp_path / 'train' / 'loose.png')
  with pytest.raises(ValueError, match='outside any class folder'):
    labelled_input.open_labelled(_config(train, val), train=True)
  with pytest.raises(ValueError, match='no labelled data'):
    labelled_input.open_labelled(_config('', ''), train=True)


def test_training_batches_carry_the_right_labels_and_resume_exactly(tmp_path):
  data = _config(_folder(tmp_path / 'train'), '', crop_scale=(0.3, 1.0))
  pipeline, batches = _stream(data, 6)
  names = sorted(COLORS)
  for batch in batches:
    assert batch['image'].shape == (4, SIZE, SIZE, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    for image, label in zip(batch['image'], batch['label']):
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), COLORS[names[label]], atol=2)
  assert pipeline.position == 24 and pipeline.skipped == 0 and pipeline.examples_per_epoch == 12
  head, _ = _stream(data, 2)
  _, tail = _stream(data, 4, start_position=head.position)
  for a, b in zip(batches[2:], tail):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_rand_augment_runs_in_the_stream_deterministically(tmp_path):
  folder = tmp_path / 'train' / 'only'
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for i in range(8):
    Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(folder / f'{i}.png')
  data = _config(str(tmp_path / 'train'), '')
  _, plain = _stream(data, 2)
  _, augmented = _stream(data, 2, rand_augment='rand-m9-mstd0.5-inc1')
  _, again = _stream(data, 2, rand_augment='rand-m9-mstd0.5-inc1')
  for a, b in zip(augmented, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert any(not np.array_equal(p['image'], a['image']) for p, a in zip(plain, augmented))


def test_eval_crop_is_resize_then_centre_crop():
  # 512 x 640 picture: a white 448 x 448 centre square on black. Resize to 256 (x0.5) and the
  # centre 224 crop is that square; crop_pct 1 keeps the black border.
  image = np.zeros((512, 640, 3), np.uint8)
  image[32:480, 96:544] = 255
  data = tf.io.encode_png(image)
  crop = labelled_input.eval_crop(data, 224, 224 / 256).numpy()
  assert crop.shape == (224, 224, 3) and crop.min() >= 250
  whole = labelled_input.eval_crop(data, 224, 1.0).numpy()
  assert whole.shape == (224, 224, 3) and whole[0, 0].max() < 5


def test_eval_batches_cover_every_image_once_with_padding(tmp_path):
  source = labelled_input.LabelledFolder(_folder(tmp_path / 'val', (5, 3, 4)), 'data.eval_folder')
  hosts = [list(labelled_input.eval_batches(source, image_size=SIZE, crop_pct=0.875,
                                            per_host_batch=4, host_index=h, host_count=2))
           for h in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 2  # 6 images per host, batches of 4
  rows = [(b['label'][i], tuple(b['image'][i, 0, 0])) for batches in hosts for b in batches
          for i in range(4) if b['mask'][i]]
  assert len(rows) == 12 and sorted(r[0] for r in rows) == sorted(source.labels)
  assert all(np.abs(np.subtract(color, COLORS[sorted(COLORS)[label]])).max() <= 2
             for label, color in rows)
  assert hosts[0][1]['mask'].tolist() == [1, 1, 0, 0]


def test_full_batches_regroups_across_epoch_ends():
  parts = [(np.arange(3),), (np.arange(3, 8),), (np.arange(8, 9),), (np.arange(9, 13),)]
  out = list(streams.full_batches(iter(parts), 4))
  np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), np.arange(12))
  assert all(len(b[0]) == 4 for b in out)


class MixmaeLabelledImages(tfds.core.GeneratorBasedBuilder):
  """Solid-colour JPEGs of 3 classes in train (12) and validation (6) splits, built offline."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = tfds.core.Path(os.path.dirname(os.path.abspath(__file__)))

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='png'),
        'label': tfds.features.ClassLabel(names=sorted(COLORS))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(12), 'validation': self._generate_examples(6)}

  def _generate_examples(self, n):
    for i in range(n):
      color = COLORS[sorted(COLORS)[i % 3]]
      yield i, {'image': np.full((30 + i, 34, 3), color, np.uint8), 'label': i % 3}


def test_tfds_labelled_train_and_eval(tmp_path):
  data = _config('', '', tfds_name='mixmae_labelled_images', tfds_data_dir=str(tmp_path / 'd'),
                 tfds_manual_dir=str(tmp_path / 'm'), shuffle_buffer=8)
  pipeline, batches = _stream(data, 5)  # 20 images: crosses an epoch end (12 per epoch)
  assert pipeline.num_classes == 3 and pipeline.examples_per_epoch == 12
  assert pipeline.position == 20
  for batch in batches:
    for image, label in zip(batch['image'], batch['label']):
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), COLORS[sorted(COLORS)[label]],
                                 atol=3)
  _, again = _stream(data, 5)
  _, tail = _stream(data, 2, start_position=12)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(batches[3]['label'], tail[0]['label'])
  source = labelled_input.open_labelled(data, train=False)
  batches = list(labelled_input.eval_batches(source, image_size=SIZE, crop_pct=1.0,
                                             per_host_batch=4))
  assert sum(b['mask'].sum() for b in batches) == 6
