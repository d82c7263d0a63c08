"""What every input stream here shares: deterministic, resumable, per-host streams of batches.

Element k of a host's stream is a pure function of (seed, host, k): image folders are shuffled
exactly per epoch inside one tf.data pipeline (`image_folders.folder_stream`); TFDS datasets
take Python-int seeds, so each epoch is its own pipeline (`tfds_batches`). Each element's
augmentation is seeded by fold_in(key, k) (`map_augmented`); elements that fail to load are
dropped and counted, batches are always full and may span epochs (`full_batches`), and
`ResumableInput.position` says where a new stream must start to continue exactly. The
pretraining and labelled inputs (`pretraining.py`, `labelled.py`) differ only in what an element
carries and how it is augmented.
"""
import dataclasses
import logging
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mixmae_jax.data import DataError, DataMissing, image_decoding

log = logging.getLogger(__name__)


def _hide_accelerators_from_tf() -> None:
  """TF would otherwise grab GPU memory that JAX needs; it only ever runs the input pipeline."""
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # no such device type, or TF already initialised
      pass


_hide_accelerators_from_tf()

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# Independent random streams drawn from one seed.
PERMUTATION, AUGMENTATION, TFDS_FILES, TFDS_SHUFFLE = 1, 2, 3, 4
ENDLESS = np.iinfo(np.int64).max

Arrays = Tuple[np.ndarray, ...]  # (stream indices [B], images [B, S, S, 3], ...)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """What one host's stream is made of."""
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
  dct_scaled_decode: bool = False  # decode large JPEG crops at 1/2, 1/4 or 1/8 scale
  resize_method: str = 'bicubic'  # the RandomResizedCrop's resize
  max_image_pixels: int = image_decoding.DEFAULT_MAX_PIXELS  # larger headers: skipped, counted

  def options(self) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if self.threads:
      options.threading.private_threadpool_size = self.threads
      options.threading.max_intra_op_parallelism = 1
    return options

  def parallel_calls(self) -> int:
    return tf.data.AUTOTUNE if self.num_parallel_calls < 0 else self.num_parallel_calls


def stream_spec(data_config, *, image_size: int, batch_size: int, seed: int, host_index: int,
                host_count: int, threads: Optional[int] = None) -> StreamSpec:
  """A StreamSpec from a config's `data` fields and this host's place."""
  if not 0 <= host_index < host_count:
    raise ValueError(f'host_index {host_index} is not in [0, host_count={host_count}).')
  if batch_size < 1:
    raise ValueError(f'need a per-host batch of at least 1, got {batch_size}.')
  return StreamSpec(
      image_size=image_size, batch_size=batch_size, seed=seed, host_index=host_index,
      host_count=host_count, crop_scale=tuple(data_config.crop_scale),
      crop_ratio=tuple(data_config.crop_ratio), hflip=bool(data_config.hflip),
      num_parallel_calls=data_config.num_parallel_calls,
      shuffle_buffer=data_config.shuffle_buffer, threads=threads,
      fused_jpeg_decode=bool(data_config.get('fused_jpeg_decode', True)),
      dct_scaled_decode=bool(data_config.get('dct_scaled_decode', False)),
      resize_method=str(data_config.get('resize_method', 'bicubic')),
      max_image_pixels=int(data_config.get('max_image_pixels',
                                           image_decoding.DEFAULT_MAX_PIXELS)))


def stream_key(*values: int) -> np.ndarray:
  """A stateless seed, int64 `[2]`, from Python integers."""
  key = tf.constant([0, values[0]], tf.int64)
  for value in values[1:]:
    key = tf.random.experimental.stateless_fold_in(key, tf.constant(value, tf.int64))
  return key.numpy()


def fold_in(key: np.ndarray, value: tf.Tensor) -> tf.Tensor:
  """The seed for one element or epoch: `key` with a scalar tensor folded in."""
  return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))


def python_seed(*values: int) -> int:
  """A Python int seed from integers, for the APIs (TFDS, shuffle) that take no tensor seed."""
  words = [v % 2**64 for v in values]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def map_augmented(elements: tf.data.Dataset, spec: StreamSpec,
                  augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.data.Dataset:
  """(k, data, *rest) -> (k, augment(data, seed of k), *rest), dropping what fails to load."""
  key = stream_key(spec.seed, spec.host_index, AUGMENTATION)

  def fn(k, data, *rest):
    return (k, augment(data, fold_in(key, k)), *rest)

  return elements.map(fn, num_parallel_calls=spec.parallel_calls()).ignore_errors()


def batched(elements: tf.data.Dataset, spec: StreamSpec, drop_remainder: bool
            ) -> Iterator[Arrays]:
  """Numpy batches of uint8 images; normalizing is left to the devices (`pixels.normalize`)."""
  batches = elements.batch(spec.batch_size, drop_remainder=drop_remainder)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(spec.options()).as_numpy_iterator()


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


# ---- TFDS ----

class TfdsReader:
  """A TFDS dataset split by host, its images left encoded; built from the manual dir the first
  time if needed (prepare it once before a multi-host run: hosts would race)."""

  def __init__(self, name: str, data_dir: str = '', manual_dir: str = ''):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.tfds, self.name = tfds, name
    self.builder = _prepared_builder(tfds, name, data_dir, manual_dir)
    self.features = self.builder.info.features
    if 'image' not in self.features:
      raise DataError(f'data.tfds_name={name!r} has no `image` feature (features: '
                       f'{list(self.features)}).')

  def size(self, split: str) -> int:
    return self.builder.info.splits[split].num_examples

  def host_split(self, split: str, host_index: int, host_count: int):
    return self.tfds.split_for_jax_process(split, process_index=host_index,
                                           process_count=host_count)

  def host_size(self, split: str, host_index: int, host_count: int) -> int:
    size = self.builder.info.splits[self.host_split(split, host_index, host_count)].num_examples
    if not size:
      raise DataError(f'host {host_index} of {host_count} gets no examples of split {split!r} '
                       f'({self.size(split)} in all). Use fewer hosts.')
    return size

  def read(self, split, shuffle_seed: Optional[int] = None,
           options: Optional[tf.data.Options] = None) -> tf.data.Dataset:
    """The examples (dicts, `image` encoded) of a split; files shuffled when a seed is given."""
    if options is None:
      options = tf.data.Options()
      options.deterministic = True
    config = self.tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options,
                                  try_autocache=False)
    return self.builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                                   read_config=config,
                                   decoders={'image': self.tfds.decode.SkipDecoding()})


def _prepared_builder(tfds, name: str, data_dir: str, manual_dir: str):
  builder = tfds.builder(name, data_dir=data_dir or None)
  if builder.is_prepared():
    return builder
  if not manual_dir:
    raise DataMissing(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and '
        f'data.tfds_manual_dir is empty. Set --config.data.tfds_manual_dir to the folder holding '
        f'its downloaded files (for imagenet2012: ILSVRC2012_img_train.tar and '
        f'ILSVRC2012_img_val.tar), or point --config.data.tfds_data_dir at a prepared copy, or '
        f'run `tfds build {name}` first.')
  # A warning so that it shows wherever logging is left at its defaults: hours may follow.
  log.warning('preparing TFDS %s from %s into %s: this reads every file once and can take hours '
              '(TFDS reports its progress); later runs reuse it', name, manual_dir,
              builder.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def tfds_batches(reader: TfdsReader, split: str, spec: StreamSpec, start: int,
                 to_element: Callable[[dict], tuple],
                 augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Iterator[Arrays]:
  """Full batches of (k, augmented image, *rest) from element `start` of the host's stream.

  Each epoch is one pipeline: its files and shuffle buffer are seeded from (seed, host, epoch);
  `to_element` maps an example to (image bytes, *rest). A partial last batch is carried into the
  next epoch (which starts with a pause while its shuffle buffer fills).
  """
  n = reader.host_size(split, spec.host_index, spec.host_count)
  host_split = reader.host_split(split, spec.host_index, spec.host_count)
  epoch, skip = divmod(start, n)

  def epochs():
    nonlocal epoch, skip
    while True:
      seeds = [python_seed(spec.seed, spec.host_index, which, epoch)
               for which in (TFDS_FILES, TFDS_SHUFFLE)]
      examples = reader.read(host_split, seeds[0], spec.options()).map(to_element)
      examples = examples.shuffle(max(min(spec.shuffle_buffer, n), 1), seed=seeds[1])
      elements = examples.enumerate(epoch * n).skip(skip).map(lambda k, e: (k, *e))
      fresh = 0
      for batch in batched(map_augmented(elements, spec, augment), spec, drop_remainder=False):
        fresh += len(batch[0])
        yield batch
      if not fresh:
        raise DataError(f'epoch {epoch} of data.tfds_name={reader.name!r} had no decodable '
                         f'image on host {spec.host_index}.')
      epoch, skip = epoch + 1, 0

  return full_batches(epochs(), spec.batch_size)


class ResumableInput:
  """This host's batches as dicts; `position` is the stream index just past the last batch, so
  a new input started there continues exactly; `examples_per_epoch` is this host's share.

  Elements that fail to load are missing from the batches' stream indices. `skipped` counts the
  distinct files behind them (a bad file is met again every epoch and counted once), found with
  `element_file(k) -> (id, name)` where the source can tell (image folders); otherwise (TFDS) it
  is the most skipped in any one epoch. `skipped_ids` / `skipped_names` are the first few; a
  resumed input is given the counts and ids its checkpoint recorded (`skipped_before`,
  `known_skipped_ids`).
  """
  keys: Tuple[str, ...] = ('image',)
  NAMED = 16

  def __init__(self, batches: Iterator[Arrays], examples_per_epoch: int, start_position: int,
               element_file: Optional[Callable[[int], Tuple[int, str]]] = None,
               skipped_before: int = 0, known_skipped_ids: Sequence[int] = ()):
    if start_position < 0:
      raise ValueError(f'start_position must be >= 0, got {start_position}.')
    self._batches = batches
    self.examples_per_epoch = examples_per_epoch
    self.start_position = self.position = start_position
    self._element_file = element_file
    self._floor = skipped_before
    self._bad: dict = {i: None for i in known_skipped_ids}  # id -> name (None: from a checkpoint)
    self._per_epoch: dict = {}
    self.skipped = skipped_before

  @property
  def epoch(self) -> float:
    return self.position / self.examples_per_epoch

  @property
  def skipped_ids(self) -> List[int]:
    return list(self._bad)[:self.NAMED]

  @property
  def skipped_names(self) -> List[str]:
    return [name for name in self._bad.values() if name][:self.NAMED]

  def __iter__(self) -> 'ResumableInput':
    return self

  def _count_skips(self, ks: np.ndarray) -> None:
    missing = np.setdiff1d(np.arange(self.position, int(ks[-1]) + 1), ks)
    fresh = []
    for k in missing.tolist():
      if self._element_file is None:
        epoch = k // max(self.examples_per_epoch, 1)
        self._per_epoch[epoch] = self._per_epoch.get(epoch, 0) + 1
        continue
      file_id, name = self._element_file(k)
      if file_id not in self._bad:
        fresh.append(name)
      if self._bad.get(file_id) is None:  # new, or known by id only (from a checkpoint)
        self._bad[file_id] = name
    found = max(self._per_epoch.values(), default=0) if self._element_file is None else \
        len(self._bad)
    grown = max(self._floor, found)
    if fresh:
      log.warning('skipped undecodable file(s) %s (%d distinct so far)', ', '.join(fresh[:5]),
                  grown)
    elif grown > self.skipped:
      log.warning('skipped undecodable images: %d distinct so far', grown)
    self.skipped = grown

  def close(self) -> None:
    """Release the pipeline (a tf.data iterator, its threads and buffers) now, not whenever
    this object is collected. Idempotent; a pipeline still inside a read on another thread
    (a stalled source) is left to that thread."""
    try:
      getattr(self._batches, 'close', lambda: None)()
    except ValueError:  # "generator already executing"
      pass

  def __enter__(self) -> 'ResumableInput':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __next__(self) -> dict:
    ks, *arrays = next(self._batches)
    if int(ks[-1]) + 1 - self.position > len(ks):
      self._count_skips(np.asarray(ks))
    self.position = int(ks[-1]) + 1
    return dict(zip(self.keys, arrays))
