"""Labelled images for fine-tuning, probing and evaluation: uint8 pixels and int labels.

Sources (the `data` fields of a fine-tuning config):
- `data.train_folder` / `data.eval_folder`: ImageFolder trees, one sub-folder per class. Classes
  are the train folder's sub-folders sorted by name (label = position, as torchvision's
  ImageFolder numbers them, empty ones included); the eval folder must use the same names.
- `data.tfds_name`: a TFDS dataset with `image` and `label` features (`imagenet2012`, or any other
  by name), splits `data.tfds_train_split` and `data.tfds_eval_split`.

Training streams are the pretraining streams (`streams.py`) with a label beside each image: element
k is a pure function of (seed, host, k), batches are full and may span epochs, undecodable images
are skipped and counted, and `position` resumes exactly. The augmentation is the fine-tuning
recipe's: RandomResizedCrop (bicubic) + flip (`image_decoding.training_crop`), then RandAugment
(`rand_augment.py`); random erasing, Mixup and CutMix run on the devices.

Evaluation batches are the whole split in order, shorter side resized to image_size / crop_pct
(bicubic), centre crop: every host gets the same number of batches (the collectives of the eval
step need it), padded with `mask` 0 rows.
"""
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from mixmae_jax.data import DataError, image_decoding, image_folders, rand_augment, streams
from mixmae_jax.data.streams import StreamSpec


class LabelledFolder:
  """An ImageFolder tree: ROOT/<class>/.../<image>; `class_names` fixes the label numbering."""

  def __init__(self, folder: str, field: str, class_names: Optional[Sequence[str]] = None):
    files = image_folders.list_images(folder, field)
    own = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    self.class_names = list(class_names) if class_names is not None else own
    index = {name: i for i, name in enumerate(self.class_names)}
    classes = [os.path.relpath(f, folder).split(os.sep)[0] for f in files]
    loose = [f for f, c in zip(files, classes) if c not in own]
    if loose:
      raise DataError(f'{field}={folder!r} has images outside any class folder (e.g. '
                       f'{loose[0]!r}); put each image under ROOT/<class name>/.')
    unknown = sorted(set(classes) - set(index))
    if unknown:
      raise DataError(f'{field}={folder!r} has classes the training folder lacks: {unknown[:5]}. '
                       f'Use the same class folder names in both.')
    self.folder, self.field = folder, field
    self.files, self.labels = files, [index[c] for c in classes]
    self.size, self.num_classes = len(files), len(self.class_names)

  def host_size(self, host_index: int, host_count: int) -> int:
    return len(self.files[host_index::host_count])

  def host_examples(self, host_index: int, host_count: int) -> tf.data.Dataset:
    """(encoded bytes, label) of this host's share, in order."""
    files = self.files[host_index::host_count]
    labels = self.labels[host_index::host_count]
    return tf.data.Dataset.from_tensor_slices((files, labels)).map(
        lambda path, label: (tf.io.read_file(path), label))

  def problem(self, spec: StreamSpec):
    """() -> why the host's files can no longer be read, or None."""
    files = self.files[spec.host_index::spec.host_count]
    return lambda: image_folders.missing_files_problem(files, f'{self.field}={self.folder!r}')

  def element_file(self, spec: StreamSpec):
    """k -> (index, path) of the file behind element k of the host's training stream."""
    files = self.files[spec.host_index::spec.host_count]
    index = image_folders.folder_element_index(files, spec)
    return lambda k: (index(k), files[index(k)])

  def batches(self, spec: StreamSpec, start: int, augment) -> streams.Arrays:
    what = f'{self.field}={self.folder!r}'
    files = image_folders.host_files(self.files, spec.host_index, spec.host_count, what)
    image_folders.require_decodable(files, f'{what} (host {spec.host_index})',
                                    spec.max_image_pixels)
    labels = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        self.files, tf.constant(self.labels, tf.int32)), default_value=-1)
    elements = image_folders.folder_stream(files, spec, start).map(
        lambda k, path: (k, tf.io.read_file(path), labels.lookup(path)))
    return streams.batched(streams.map_augmented(elements, spec, augment), spec,
                           drop_remainder=True)


def _image_and_label(example):
  return example['image'], tf.cast(example['label'], tf.int32)


class LabelledTfds:
  """A TFDS split with `image` and `label` features (built from the manual dir if needed)."""

  def __init__(self, data_config, split: str):
    self.reader = streams.TfdsReader(data_config.tfds_name, data_config.tfds_data_dir,
                                     data_config.tfds_manual_dir)
    if 'label' not in self.reader.features:
      raise DataError(f'data.tfds_name={data_config.tfds_name!r} has no `label` feature '
                       f'(features: {list(self.reader.features)}); fine-tuning needs labels.')
    self.split, self.size = split, self.reader.size(split)
    self.num_classes = self.reader.features['label'].num_classes
    self.class_names = list(self.reader.features['label'].names)

  def host_size(self, host_index: int, host_count: int) -> int:
    return self.reader.host_size(self.split, host_index, host_count)

  def host_examples(self, host_index: int, host_count: int) -> tf.data.Dataset:
    return self.reader.read(self.reader.host_split(self.split, host_index, host_count)).map(
        _image_and_label)

  def batches(self, spec: StreamSpec, start: int, augment) -> streams.Arrays:
    return streams.tfds_batches(self.reader, self.split, spec, start, _image_and_label, augment)

  def element_file(self, spec: StreamSpec):
    del spec  # shuffled TFDS examples have no cheap identity: skips are counted per epoch
    return None

  def problem(self, spec: StreamSpec):
    del spec  # TFDS reads its own files: a stall is reported after data.stall_seconds
    return lambda: None


def source_name(data_config, train: bool = True) -> str:
  """How errors name the labelled source: `data.train_folder='...'` or `TFDS 'name'`."""
  if data_config.train_folder:
    field = 'train_folder' if train else 'eval_folder'
    return f'data.{field}={data_config[field]!r}'
  return f'TFDS {data_config.tfds_name!r}'


def open_labelled(data_config, train: bool, class_names: Optional[Sequence[str]] = None):
  """The train or eval source `data_config` selects (see the module docstring)."""
  if data_config.train_folder:
    if train:
      return LabelledFolder(data_config.train_folder, 'data.train_folder')
    if class_names is None:
      class_names = LabelledFolder(data_config.train_folder, 'data.train_folder').class_names
    return LabelledFolder(data_config.eval_folder, 'data.eval_folder', class_names)
  if data_config.tfds_name:
    split = data_config.tfds_train_split if train else data_config.tfds_eval_split
    return LabelledTfds(data_config, split)
  raise DataError('no labelled data: set --config.data.train_folder and '
                   '--config.data.eval_folder (ImageFolder trees) or --config.data.tfds_name.')


def _augmenter(spec: StreamSpec, policy: Optional[rand_augment.RandAugmentPolicy]):
  """(encoded bytes, seed) -> uint8 [S, S, 3]: RandomResizedCrop + flip, then RandAugment."""
  def augment(data, seed):
    crop_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = image_decoding.training_crop(data, crop_seed, spec.image_size, spec.crop_scale,
                                         spec.crop_ratio, spec.hflip,
                                         max_pixels=spec.max_image_pixels)
    if policy is not None:
      image = rand_augment.rand_augment(image, ra_seed, policy)
    return image
  return augment


class LabelledTrainInput(streams.ResumableInput):
  """This host's training batches: `next()` gives {'image': uint8 [B, S, S, 3], 'label': int32
  [B]}. `position`, `skipped` and `examples_per_epoch` work as in `PretrainingInput`."""
  keys = ('image', 'label')

  def __init__(self, data_config, augment_config, *, image_size: int, per_host_batch: int,
               seed: int, host_index: int = 0, host_count: int = 1, start_position: int = 0,
               skipped_before: int = 0, known_skipped_ids: Sequence[int] = ()):
    spec = streams.stream_spec(data_config, image_size=image_size, batch_size=per_host_batch,
                               seed=seed, host_index=host_index, host_count=host_count)
    policy = augment_config.rand_augment
    source = open_labelled(data_config, train=True)
    self.num_classes, self.class_names = source.num_classes, source.class_names
    augment = _augmenter(spec, rand_augment.parse_policy(policy) if policy else None)
    super().__init__(source.batches(spec, max(start_position, 0), augment),
                     source.host_size(host_index, host_count), start_position,
                     source.element_file(spec), skipped_before, known_skipped_ids)
    self.problem = source.problem(spec)
    self.source_name = source_name(data_config)


def eval_crop(data: tf.Tensor, image_size: int, crop_pct: float,
              max_pixels: int = image_decoding.DEFAULT_MAX_PIXELS) -> tf.Tensor:
  """Shorter side to int(image_size / crop_pct) (bicubic), centre image_size crop: uint8."""
  resize = int(image_size / crop_pct)
  square = image_decoding.center_crop(data, resize, max_pixels)
  offset = (resize - image_size) // 2
  return square[offset:offset + image_size, offset:offset + image_size]


def eval_batches(source, *, image_size: int, crop_pct: float, per_host_batch: int,
                 host_index: int = 0, host_count: int = 1,
                 max_pixels: int = image_decoding.DEFAULT_MAX_PIXELS) -> Iterator[dict]:
  """This host's evaluation batches {'image', 'label', 'mask'}; the same count on every host.

  Undecodable images are left out (their rows never appear); padding rows have mask 0.
  """
  num_batches = -(-max(source.host_size(h, host_count) for h in range(host_count)) //
                  per_host_batch)
  examples = source.host_examples(host_index, host_count).map(
      lambda data, label: (eval_crop(data, image_size, crop_pct, max_pixels), label),
      num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  batches = examples.batch(per_host_batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for _ in range(num_batches):
    images, labels = next(batches, (np.zeros((0, image_size, image_size, 3), np.uint8),
                                    np.zeros((0,), np.int32)))
    pad = per_host_batch - len(labels)
    yield {'image': np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.uint8)]),
           'label': np.concatenate([labels, np.zeros((pad,), np.int32)]).astype(np.int32),
           'mask': np.concatenate([np.ones(len(labels), np.float32), np.zeros(pad, np.float32)])}
