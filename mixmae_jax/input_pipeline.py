"""The pretraining input: an endless, deterministic, resumable stream of augmented image batches.

Sources, in order of precedence (the `data` fields of the config):
- `data.image_folder`: a tree of image files (.jpg .jpeg .png .bmp .gif .webp, any case), read
  recursively and sorted, so every host lists the same files in the same order;
- `data.tfds_name`: a TFDS dataset with an `image` feature, e.g. `imagenet2012`, built on first use
  from `data.tfds_manual_dir` (prepare it once before a multi-host run: hosts would race);
- otherwise the 64 demo images shipped in `demo_images/`: real ImageNet (ILSVRC-2012) photos of
  64 different classes, picked evenly spaced from a public 500-image sample set (one image per
  class, sorted by class id), shrunk (bicubic) so the shorter side is 144 px, centre-cropped to
  144 x 144 and saved as JPEG quality 85 under their class names.

The stream of a host: element k is image `k % n` of a permutation of the host's n images drawn for
epoch `k // n`; its crop and flip come from stateless random ops seeded by (seed, host, k). Nothing
depends on iterator state, so `PretrainingInput(..., start_position=p)` yields exactly what an
uninterrupted stream yields from element p on. Images that fail to decode are dropped from the
batches and counted (`skipped`); batches are always full and may span epochs.

Image folders are sharded by file (`files[host_index::host_count]`) and shuffled exactly per
epoch inside one tf.data pipeline. TFDS datasets are split per host with
`tfds.split_for_jax_process`; their file order and shuffle buffer need Python-int seeds, so each
epoch is its own pipeline and a partial last batch is carried into the next epoch's first batch
(each epoch starts with a pause while its shuffle buffer fills).
"""
import dataclasses
import logging
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mixmae_jax import image_decoding


def _hide_accelerators_from_tf() -> None:
  """TF would otherwise grab GPU memory that JAX needs; it only ever runs the input pipeline."""
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # no such device type, or TF already initialised
      pass


_hide_accelerators_from_tf()

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
DEMO_IMAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo_images')

# Independent random streams drawn from one seed.
_PERMUTATION, _AUGMENTATION, _TFDS_FILES, _TFDS_SHUFFLE = 1, 2, 3, 4
_ENDLESS = np.iinfo(np.int64).max

Batches = Iterator[Tuple[np.ndarray, np.ndarray]]  # (stream indices [B], images [B, S, S, 3])


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """What one host's stream is made of; `PretrainingInput` builds it from the data config."""
  image_size: int
  batch_size: int
  seed: int
  host_index: int
  host_count: int
  crop_scale: Tuple[float, float]
  crop_ratio: Tuple[float, float]
  hflip: bool
  num_parallel_calls: int
  shuffle_buffer: int
  threads: Optional[int] = None  # tf.data's private thread pool; None: TF's shared pools
  fused_jpeg_decode: bool = True  # decode only the crop of a JPEG

  def options(self) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if self.threads:
      options.threading.private_threadpool_size = self.threads
      options.threading.max_intra_op_parallelism = 1
    return options

  def parallel_calls(self) -> int:
    return tf.data.AUTOTUNE if self.num_parallel_calls < 0 else self.num_parallel_calls


def _key(*values: int) -> np.ndarray:
  """A stateless seed, int64 `[2]`, from Python integers."""
  key = tf.constant([0, values[0]], tf.int64)
  for value in values[1:]:
    key = tf.random.experimental.stateless_fold_in(key, tf.constant(value, tf.int64))
  return key.numpy()


def _fold_in(key: np.ndarray, value: tf.Tensor) -> tf.Tensor:
  """The seed for one element or epoch: `key` with a scalar tensor folded in."""
  return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))


def _python_seed(*values: int) -> int:
  """A Python int seed from integers, for the APIs (TFDS, shuffle) that take no tensor seed."""
  words = [v % 2**64 for v in values]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def _augmented(elements: tf.data.Dataset, spec: StreamSpec, read_files: bool) -> tf.data.Dataset:
  """(k, path or encoded bytes) -> (k, uint8 `[S, S, 3]`), dropping what fails to load."""
  key = _key(spec.seed, spec.host_index, _AUGMENTATION)

  def augment(k, source):
    data = tf.io.read_file(source) if read_files else source
    seed = _fold_in(key, k)
    image = image_decoding.training_crop(data, seed, spec.image_size, spec.crop_scale,
                                         spec.crop_ratio, spec.hflip,
                                         fused_jpeg=spec.fused_jpeg_decode)
    return k, image

  return elements.map(augment, num_parallel_calls=spec.parallel_calls()).ignore_errors()


def _batched(elements: tf.data.Dataset, spec: StreamSpec, drop_remainder: bool) -> Batches:
  """uint8 batches; normalizing is left to the devices (`pixels.normalize`)."""
  batches = elements.batch(spec.batch_size, drop_remainder=drop_remainder)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(spec.options()).as_numpy_iterator()


class FolderSource:
  """Image files under a folder, sorted; `field` names the config field for error messages."""

  def __init__(self, folder: str, field: str):
    self.folder, self.field = folder, field
    self.files = list_images(folder, field)
    self.size = len(self.files)

  def host_files(self, host_index: int, host_count: int) -> List[str]:
    files = self.files[host_index::host_count]
    if not files:
      raise ValueError(f'host {host_index} of {host_count} gets no images: {self.field}='
                       f'{self.folder!r} has only {self.size}. Use more images or fewer hosts.')
    return files

  def host_size(self, host_index: int, host_count: int) -> int:
    return len(self.host_files(host_index, host_count))

  def ordered_bytes(self) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self.files).map(tf.io.read_file)

  def batches(self, spec: StreamSpec, start: int) -> Batches:
    files = self.host_files(spec.host_index, spec.host_count)
    _require_decodable(files, f'{self.field}={self.folder!r} (host {spec.host_index})')
    elements = _folder_stream(files, spec, start)
    return _batched(_augmented(elements, spec, read_files=True), spec, drop_remainder=True)


def list_images(folder: str, field: str = 'data.image_folder') -> List[str]:
  """Every image file under `folder` (recursively, following links), sorted."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(
        f'{field}={folder!r} is not a directory. Point --config.{field} at a folder of images '
        f'(searched recursively), or set it to \'\' to use data.tfds_name or the demo images.')
  files = []
  for root, dirs, names in os.walk(folder, followlinks=True):
    dirs.sort()
    files.extend(os.path.join(root, name) for name in names
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(
        f'{field}={folder!r} holds no images ({" ".join(IMAGE_EXTENSIONS)}, any case, searched '
        f'recursively). Put images there or point --config.{field} at another folder.')
  return sorted(files)


def _folder_stream(files: Sequence[str], spec: StreamSpec, start: int) -> tf.data.Dataset:
  """The host's endless (k, path) stream from element `start`, one fresh permutation per epoch."""
  n = len(files)
  paths = tf.constant(list(files))
  key = _key(spec.seed, spec.host_index, _PERMUTATION)

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(tf.range(n), _fold_in(key, e))
    ks = e * n + tf.range(n, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((ks, tf.gather(paths, order)))

  epochs = tf.data.Dataset.range(start // n, _ENDLESS)
  return epochs.flat_map(epoch).skip(start % n)


def _require_decodable(files: Sequence[str], what: str) -> None:
  """Fails fast where the endless stream would otherwise search forever for a good image."""
  found = (tf.data.Dataset.from_tensor_slices(list(files))
           .map(lambda path: tf.shape(image_decoding.decode_any(tf.io.read_file(path))))
           .ignore_errors().take(1))
  if not list(found):
    raise ValueError(f'none of the {len(files)} images of {what} can be decoded.')


class TfdsSource:
  """A TFDS split with an `image` feature, built from the manual dir the first time if needed."""

  def __init__(self, data_config):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.tfds = tfds
    self.builder = _prepared_builder(tfds, data_config)
    self.split = data_config.tfds_split
    if 'image' not in self.builder.info.features:
      raise ValueError(f'data.tfds_name={data_config.tfds_name!r} has no `image` feature '
                       f'(features: {list(self.builder.info.features)}).')
    self.size = self.builder.info.splits[self.split].num_examples

  def host_split(self, host_index: int, host_count: int):
    return self.tfds.split_for_jax_process(self.split, process_index=host_index,
                                           process_count=host_count)

  def host_size(self, host_index: int, host_count: int) -> int:
    size = self.builder.info.splits[self.host_split(host_index, host_count)].num_examples
    if not size:
      raise ValueError(f'host {host_index} of {host_count} gets no examples of split '
                       f'{self.split!r} ({self.size} in all). Use fewer hosts.')
    return size

  def _read(self, split, shuffle_seed: Optional[int], options: tf.data.Options):
    config = self.tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options,
                                  try_autocache=False)
    examples = self.builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=config,
        decoders={'image': self.tfds.decode.SkipDecoding()})
    return examples.map(lambda example: example['image'])

  def ordered_bytes(self) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return self._read(self.split, None, options)

  def epoch_elements(self, spec: StreamSpec, epoch: int, skip: int) -> tf.data.Dataset:
    """(k, encoded bytes) of one epoch, from its `skip`-th element on, before any decoding."""
    n = self.host_size(spec.host_index, spec.host_count)
    split = self.host_split(spec.host_index, spec.host_count)
    files_seed = _python_seed(spec.seed, spec.host_index, _TFDS_FILES, epoch)
    shuffle_seed = _python_seed(spec.seed, spec.host_index, _TFDS_SHUFFLE, epoch)
    images = self._read(split, files_seed, spec.options())
    images = images.shuffle(max(min(spec.shuffle_buffer, n), 1), seed=shuffle_seed)
    return images.enumerate(epoch * n).skip(skip)

  def batches(self, spec: StreamSpec, start: int) -> Batches:
    n = self.host_size(spec.host_index, spec.host_count)
    epoch, skip = divmod(start, n)
    carry = None  # a partial batch from the end of the previous epoch
    while True:
      elements = _augmented(self.epoch_elements(spec, epoch, skip), spec, read_files=False)
      carried = 0 if carry is None else len(carry[0])
      if carried:  # placeholders, replaced by the carried rows once batched
        blank = (tf.constant(-1, tf.int64),
                 tf.zeros([spec.image_size, spec.image_size, 3], tf.uint8))
        elements = tf.data.Dataset.from_tensors(blank).repeat(carried).concatenate(elements)
      fresh = 0  # decodable images of this epoch seen so far
      for ks, images in _batched(elements, spec, drop_remainder=False):
        fresh += int(np.sum(ks >= 0))
        if carried:
          ks = np.concatenate([carry[0], ks[carried:]])
          images = np.concatenate([carry[1], images[carried:]])
          carried, carry = 0, None
        if len(ks) == spec.batch_size:
          yield ks, images
        else:
          carry = (ks, images)
      if not fresh:
        raise ValueError(f'epoch {epoch} of data.tfds_name={self.builder.name!r} had no '
                         f'decodable image on host {spec.host_index}.')
      epoch, skip = epoch + 1, 0


def _prepared_builder(tfds, data_config):
  name, manual_dir = data_config.tfds_name, data_config.tfds_manual_dir
  builder = tfds.builder(name, data_dir=data_config.tfds_data_dir or None)
  if builder.is_prepared():
    return builder
  if not manual_dir:
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and '
        f'data.tfds_manual_dir is empty. Set --config.data.tfds_manual_dir to the folder holding '
        f'its downloaded files (for imagenet2012: ILSVRC2012_img_train.tar and '
        f'ILSVRC2012_img_val.tar), or point --config.data.tfds_data_dir at a prepared copy, or '
        f'run `tfds build {name}` first.')
  logging.info('preparing TFDS %s from %s (once)', name, manual_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def open_source(data_config):
  """The `FolderSource` or `TfdsSource` that `data_config` selects (see the module docstring)."""
  if data_config.image_folder:
    return FolderSource(data_config.image_folder, 'data.image_folder')
  if data_config.tfds_name:
    return TfdsSource(data_config)
  return FolderSource(DEMO_IMAGES, 'the demo images')


def dataset_size(data_config) -> int:
  """The number of training images on all hosts together, without decoding any."""
  return open_source(data_config).size


class PretrainingInput:
  """This host's batches: `next()` gives {'image': uint8 `[per_host_batch, S, S, 3]`}.

  Images are MixMAE-augmented (RandomResizedCrop, flip); the train step normalizes them on the
  devices with the config's mean and std (`pixels.normalize`), so a quarter of the bytes of
  float32 crosses to the devices. After each batch, `position` is the index in this host's stream just past it: a new
  `PretrainingInput(..., start_position=position)` continues exactly where this one is.
  `skipped` counts undecodable images passed over since `start_position`.
  `threads` (optional) caps tf.data to a private pool of that many threads.
  """

  def __init__(self, data_config, *, image_size: int, per_host_batch: int, seed: int,
               host_index: int = 0, host_count: int = 1, start_position: int = 0,
               threads: Optional[int] = None):
    if not 0 <= host_index < host_count:
      raise ValueError(f'host_index {host_index} is not in [0, host_count={host_count}).')
    if per_host_batch < 1 or start_position < 0:
      raise ValueError(f'need per_host_batch >= 1 and start_position >= 0, got '
                       f'{per_host_batch} and {start_position}.')
    spec = StreamSpec(
        image_size=image_size, batch_size=per_host_batch, seed=seed, host_index=host_index,
        host_count=host_count, crop_scale=tuple(data_config.crop_scale),
        crop_ratio=tuple(data_config.crop_ratio), hflip=bool(data_config.hflip),
        num_parallel_calls=data_config.num_parallel_calls,
        shuffle_buffer=data_config.shuffle_buffer, threads=threads,
        fused_jpeg_decode=bool(data_config.get('fused_jpeg_decode', True)))
    source = open_source(data_config)
    self.examples_per_epoch = source.host_size(host_index, host_count)
    self.start_position = self.position = start_position
    self.skipped = 0
    self._returned = 0
    self._batches = source.batches(spec, start_position)

  @property
  def epoch(self) -> float:
    return self.position / self.examples_per_epoch

  def __iter__(self) -> 'PretrainingInput':
    return self

  def __next__(self) -> dict:
    ks, images = next(self._batches)
    self._returned += len(ks)
    self.position = int(ks[-1]) + 1
    skipped = self.position - self.start_position - self._returned
    if skipped > self.skipped:
      logging.warning('skipped %d undecodable images', skipped)
    self.skipped = skipped
    return {'image': images}


def reconstruction_images(data_config, image_size: int, count: int) -> np.ndarray:
  """The first `count` decodable images of the source, centre-cropped: uint8 `[count, S, S, 3]`.

  The same on every host and every run (the shorter side resized to `image_size`, bicubic, then
  the centre square), so pictures drawn at different steps compare. A source with fewer
  decodable images repeats them.
  """
  source = open_source(data_config)
  crops = (source.ordered_bytes()
           .map(lambda data: image_decoding.center_crop(data, image_size))
           .ignore_errors().take(count))
  images = list(crops.as_numpy_iterator())
  if not images:
    raise ValueError('the data source has no decodable image for reconstruction pictures.')
  return np.stack([images[i % len(images)] for i in range(count)])
