"""Labelled images for fine-tuning, probing and evaluation: uint8 pixels and int labels.

Sources (the `data` fields of a fine-tuning config):
- `data.train_folder` / `data.eval_folder`: ImageFolder trees, one sub-folder per class. Classes
  are the train folder's sub-folders sorted by name (label = position, as torchvision's
  ImageFolder numbers them, empty ones included); the eval folder must use the same names.
- `data.tfds_name`: a TFDS dataset with `image` and `label` features (`imagenet2012`, or any other
  by name), splits `data.tfds_train_split` and `data.tfds_eval_split`.

Training streams work like the pretraining stream (`input_pipeline.py`): element k of a host's
stream is a pure function of (seed, host, k), batches are full and may span epochs, undecodable
images are skipped and counted, and `position` resumes exactly. The augmentation is the
fine-tuning recipe's: RandomResizedCrop (bicubic) + flip (`image_decoding.training_crop`), then
RandAugment (`rand_augment.py`); random erasing, Mixup and CutMix run on the devices.

Evaluation batches are the whole split in order, shorter side resized to image_size / crop_pct
(bicubic), centre crop: every host gets the same number of batches (the collectives of the eval
step need it), padded with `mask` 0 rows.
"""
import dataclasses
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

from mixmae_jax import image_decoding, input_pipeline, rand_augment

Arrays = Tuple[np.ndarray, ...]


class LabelledFolder:
  """An ImageFolder tree: ROOT/<class>/.../<image>; `class_names` fixes the label numbering."""

  def __init__(self, folder: str, field: str, class_names: Optional[Sequence[str]] = None):
    files = input_pipeline.list_images(folder, field)
    own = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    self.class_names = list(class_names) if class_names is not None else own
    index = {name: i for i, name in enumerate(self.class_names)}
    classes = [os.path.relpath(f, folder).split(os.sep)[0] for f in files]
    loose = [f for f, c in zip(files, classes) if c not in own]
    if loose:
      raise ValueError(f'{field}={folder!r} has images outside any class folder (e.g. '
                       f'{loose[0]!r}); put each image under ROOT/<class name>/.')
    unknown = sorted(set(classes) - set(index))
    if unknown:
      raise ValueError(f'{field}={folder!r} has classes the training folder lacks: {unknown[:5]}. '
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


class LabelledTfds:
  """A TFDS split with `image` and `label` features (built from the manual dir if needed)."""

  def __init__(self, data_config, split: str):
    source_config = ml_collections.ConfigDict(dict(
        tfds_name=data_config.tfds_name, tfds_split=split, tfds_data_dir=data_config.tfds_data_dir,
        tfds_manual_dir=data_config.tfds_manual_dir))
    self.source = input_pipeline.TfdsSource(source_config)
    features = self.source.builder.info.features
    if 'label' not in features:
      raise ValueError(f'data.tfds_name={data_config.tfds_name!r} has no `label` feature '
                       f'(features: {list(features)}); fine-tuning needs labels.')
    self.split, self.size = split, self.source.size
    self.num_classes = features['label'].num_classes
    self.class_names = list(features['label'].names)

  def host_size(self, host_index: int, host_count: int) -> int:
    return self.source.host_size(host_index, host_count)

  def read(self, split, shuffle_seed: Optional[int], options: tf.data.Options) -> tf.data.Dataset:
    tfds = self.source.tfds
    config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options, try_autocache=False)
    examples = self.source.builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=config,
        decoders={'image': tfds.decode.SkipDecoding()})
    return examples.map(lambda e: (e['image'], tf.cast(e['label'], tf.int32)))

  def host_examples(self, host_index: int, host_count: int) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return self.read(self.source.host_split(host_index, host_count), None, options)


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
  raise ValueError('no labelled data: set --config.data.train_folder and '
                   '--config.data.eval_folder (ImageFolder trees) or --config.data.tfds_name.')


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """What one host's labelled training stream is made of."""
  stream: input_pipeline.StreamSpec
  rand_augment: Optional[rand_augment.RandAugmentPolicy]


def _augment(elements: tf.data.Dataset, spec: TrainSpec) -> tf.data.Dataset:
  """(k, bytes, label) -> (k, uint8 [S, S, 3], label), dropping what fails to decode."""
  s = spec.stream
  key = input_pipeline._key(s.seed, s.host_index, input_pipeline._AUGMENTATION)  # pylint: disable=protected-access

  def augment(k, data, label):
    crop_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(
        input_pipeline._fold_in(key, k), 2))  # pylint: disable=protected-access
    image = image_decoding.training_crop(data, crop_seed, s.image_size, s.crop_scale,
                                         s.crop_ratio, s.hflip)
    if spec.rand_augment is not None:
      image = rand_augment.rand_augment(image, ra_seed, spec.rand_augment)
    return k, image, label

  return elements.map(augment, num_parallel_calls=s.parallel_calls()).ignore_errors()


def _numpy_batches(elements: tf.data.Dataset, spec: input_pipeline.StreamSpec,
                   drop_remainder: bool) -> Iterator[Arrays]:
  batches = elements.batch(spec.batch_size, drop_remainder=drop_remainder)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(spec.options()).as_numpy_iterator()


def _folder_batches(source: LabelledFolder, spec: TrainSpec, start: int) -> Iterator[Arrays]:
  s = spec.stream
  files = source.files[s.host_index::s.host_count]
  if not files:
    raise ValueError(f'host {s.host_index} of {s.host_count} gets no images: {source.field}='
                     f'{source.folder!r} has only {source.size}. Use more images or fewer hosts.')
  input_pipeline._require_decodable(files, f'{source.field}={source.folder!r} (host '  # pylint: disable=protected-access
                                    f'{s.host_index})')
  labels = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
      source.files, tf.constant(source.labels, tf.int32)), default_value=-1)
  stream = input_pipeline._folder_stream(files, s, start)  # pylint: disable=protected-access
  elements = stream.map(lambda k, path: (k, tf.io.read_file(path), labels.lookup(path)))
  return _numpy_batches(_augment(elements, spec), s, drop_remainder=True)


def _tfds_batches(source: LabelledTfds, spec: TrainSpec, start: int) -> Iterator[Arrays]:
  """Per-epoch pipelines (TFDS takes Python-int seeds), regrouped into full batches."""
  s = spec.stream
  n = source.host_size(s.host_index, s.host_count)
  split = source.source.host_split(s.host_index, s.host_count)
  epoch, skip = divmod(start, n)

  def epochs():
    nonlocal epoch, skip
    while True:
      seeds = [input_pipeline._python_seed(s.seed, s.host_index, which, epoch)  # pylint: disable=protected-access
               for which in (input_pipeline._TFDS_FILES, input_pipeline._TFDS_SHUFFLE)]  # pylint: disable=protected-access
      examples = source.read(split, seeds[0], s.options())
      examples = examples.shuffle(max(min(s.shuffle_buffer, n), 1), seed=seeds[1])
      elements = examples.enumerate(epoch * n).skip(skip).map(lambda k, e: (k, *e))
      fresh = 0
      for batch in _numpy_batches(_augment(elements, spec), s, drop_remainder=False):
        fresh += len(batch[0])
        yield batch
      if not fresh:
        raise ValueError(f'epoch {epoch} of data.tfds_name={source.source.builder.name!r} had '
                         f'no decodable image on host {s.host_index}.')
      epoch, skip = epoch + 1, 0

  return full_batches(epochs(), s.batch_size)


def full_batches(batches: Iterator[Arrays], batch_size: int) -> Iterator[Arrays]:
  """Regroup batches of any sizes (tuples of arrays with a leading batch axis) into full ones."""
  pending: List[Arrays] = []
  count = 0
  for batch in batches:
    if not pending and len(batch[0]) == batch_size:
      yield batch
      continue
    pending.append(batch)
    count += len(batch[0])
    while count >= batch_size:
      joined = tuple(np.concatenate(parts) for parts in zip(*pending))
      yield tuple(x[:batch_size] for x in joined)
      rest = tuple(x[batch_size:] for x in joined)
      count -= batch_size
      pending = [rest] if count else []


class LabelledTrainInput:
  """This host's training batches: `next()` gives {'image': uint8 [B, S, S, 3], 'label': int32
  [B]}. `position`, `skipped` and `examples_per_epoch` work as in `PretrainingInput`."""

  def __init__(self, data_config, augment_config, *, image_size: int, per_host_batch: int,
               seed: int, host_index: int = 0, host_count: int = 1, start_position: int = 0):
    stream = input_pipeline.StreamSpec(
        image_size=image_size, batch_size=per_host_batch, seed=seed, host_index=host_index,
        host_count=host_count, crop_scale=tuple(data_config.crop_scale),
        crop_ratio=tuple(data_config.crop_ratio), hflip=bool(data_config.hflip),
        num_parallel_calls=data_config.num_parallel_calls,
        shuffle_buffer=data_config.shuffle_buffer)
    policy = augment_config.rand_augment
    spec = TrainSpec(stream, rand_augment.parse_policy(policy) if policy else None)
    source = open_labelled(data_config, train=True)
    self.num_classes, self.class_names = source.num_classes, source.class_names
    self.examples_per_epoch = source.host_size(host_index, host_count)
    self.start_position = self.position = start_position
    self.skipped = 0
    self._returned = 0
    if isinstance(source, LabelledFolder):
      self._batches = _folder_batches(source, spec, start_position)
    else:
      self._batches = _tfds_batches(source, spec, start_position)

  def __iter__(self) -> 'LabelledTrainInput':
    return self

  def __next__(self) -> dict:
    ks, images, labels = next(self._batches)
    self._returned += len(ks)
    self.position = int(ks[-1]) + 1
    self.skipped = self.position - self.start_position - self._returned
    return {'image': images, 'label': labels}


def eval_crop(data: tf.Tensor, image_size: int, crop_pct: float) -> tf.Tensor:
  """Shorter side to int(image_size / crop_pct) (bicubic), centre image_size crop: uint8."""
  resize = int(image_size / crop_pct)
  square = image_decoding.center_crop(data, resize)
  offset = (resize - image_size) // 2
  return square[offset:offset + image_size, offset:offset + image_size]


def eval_batches(source, *, image_size: int, crop_pct: float, per_host_batch: int,
                 host_index: int = 0, host_count: int = 1) -> Iterator[dict]:
  """This host's evaluation batches {'image', 'label', 'mask'}; the same count on every host.

  Undecodable images are left out (their rows never appear); padding rows have mask 0.
  """
  num_batches = -(-max(source.host_size(h, host_count) for h in range(host_count)) //
                  per_host_batch)
  examples = source.host_examples(host_index, host_count).map(
      lambda data, label: (eval_crop(data, image_size, crop_pct), label),
      num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  batches = examples.batch(per_host_batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for _ in range(num_batches):
    images, labels = next(batches, (np.zeros((0, image_size, image_size, 3), np.uint8),
                                    np.zeros((0,), np.int32)))
    pad = per_host_batch - len(labels)
    yield {'image': np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.uint8)]),
           'label': np.concatenate([labels, np.zeros((pad,), np.int32)]).astype(np.int32),
           'mask': np.concatenate([np.ones(len(labels), np.float32), np.zeros(pad, np.float32)])}
