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

Element k of a host's stream is image `k % n` of a permutation of the host's n images drawn for
epoch `k // n`, RandomResizedCrop + flip seeded by (seed, host, k) (see `streams.py`). Image
folders are sharded by file (`files[host_index::host_count]`); TFDS datasets are split per host
with `tfds.split_for_jax_process`.
"""
import os
from typing import Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from mixmae_jax.data import DataError, image_decoding, image_folders, streams
from mixmae_jax.data.streams import StreamSpec

DEMO_IMAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo_images')


def _cropper(spec: StreamSpec, read_files: bool):
  """(path or encoded bytes, seed) -> uint8 `[S, S, 3]`: RandomResizedCrop and flip."""
  def augment(source, seed):
    data = tf.io.read_file(source) if read_files else source
    return image_decoding.training_crop(data, seed, spec.image_size, spec.crop_scale,
                                        spec.crop_ratio, spec.hflip,
                                        fused_jpeg=spec.fused_jpeg_decode,
                                        dct_scaled=spec.dct_scaled_decode,
                                        resize_method=spec.resize_method,
                                        max_pixels=spec.max_image_pixels)
  return augment


class FolderSource:
  """Image files under a folder, sorted; `field` names the config field for error messages."""

  def __init__(self, folder: str, field: str):
    self.folder, self.field = folder, field
    self.name = f'{field}={folder!r}'
    self.files = image_folders.list_images(folder, field)
    self.size = len(self.files)

  def host_files(self, host_index: int, host_count: int) -> List[str]:
    return image_folders.host_files(self.files, host_index, host_count,
                              f'{self.field}={self.folder!r}')

  def host_size(self, host_index: int, host_count: int) -> int:
    return len(self.host_files(host_index, host_count))

  def ordered_bytes(self) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self.files).map(tf.io.read_file)

  def problem(self, spec: StreamSpec) -> Callable[[], Optional[str]]:
    """() -> why the host's files can no longer be read, or None."""
    files = self.host_files(spec.host_index, spec.host_count)
    return lambda: image_folders.missing_files_problem(files, f'{self.field}={self.folder!r}')

  def element_file(self, spec: StreamSpec):
    """k -> (index, path) of the file behind element k of the host's stream."""
    files = self.host_files(spec.host_index, spec.host_count)
    index = image_folders.folder_element_index(files, spec)
    return lambda k: (index(k), files[index(k)])

  def batches(self, spec: StreamSpec, start: int) -> streams.Arrays:
    files = self.host_files(spec.host_index, spec.host_count)
    image_folders.require_decodable(files, f'{self.field}={self.folder!r} (host {spec.host_index})',
                              spec.max_image_pixels)
    elements = image_folders.folder_stream(files, spec, start)
    augmented = streams.map_augmented(elements, spec, _cropper(spec, read_files=True))
    return streams.batched(augmented, spec, drop_remainder=True)


class TfdsSource:
  """A TFDS split with an `image` feature."""

  def __init__(self, data_config):
    self.reader = streams.TfdsReader(data_config.tfds_name, data_config.tfds_data_dir,
                                     data_config.tfds_manual_dir)
    self.split = data_config.tfds_split
    self.size = self.reader.size(self.split)
    self.name = f'TFDS {data_config.tfds_name!r} split {self.split!r}'

  def host_size(self, host_index: int, host_count: int) -> int:
    return self.reader.host_size(self.split, host_index, host_count)

  def ordered_bytes(self) -> tf.data.Dataset:
    return self.reader.read(self.split).map(lambda example: example['image'])

  def element_file(self, spec: StreamSpec):
    del spec  # shuffled TFDS examples have no cheap identity: skips are counted per epoch
    return None

  def problem(self, spec: StreamSpec) -> Callable[[], Optional[str]]:
    del spec  # TFDS reads its own files: a stall is reported after data.stall_seconds
    return lambda: None

  def batches(self, spec: StreamSpec, start: int) -> streams.Arrays:
    return streams.tfds_batches(self.reader, self.split, spec, start,
                                lambda example: (example['image'],),
                                _cropper(spec, read_files=False))


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


class PretrainingInput(streams.ResumableInput):
  """This host's batches: `next()` gives {'image': uint8 `[per_host_batch, S, S, 3]`}.

  Images are RandomResizedCrop + flip augmented; the train step normalizes them on the devices
  with the config's mean and std (`pixels.normalize`), so a quarter of the bytes of float32
  crosses to the devices. After each batch, `position` is the index in this host's stream just
  past it: a new `PretrainingInput(..., start_position=position)` continues exactly where this
  one is. `skipped` counts the distinct undecodable files passed over (see
  `streams.ResumableInput`; `skipped_before` / `known_skipped_ids` carry a checkpoint's count
  over). `threads` (optional) caps tf.data to a private pool of that many threads.
  """
  keys = ('image',)

  def __init__(self, data_config, *, image_size: int, per_host_batch: int, seed: int,
               host_index: int = 0, host_count: int = 1, start_position: int = 0,
               threads: Optional[int] = None, skipped_before: int = 0,
               known_skipped_ids: Sequence[int] = ()):
    spec = streams.stream_spec(data_config, image_size=image_size, batch_size=per_host_batch,
                               seed=seed, host_index=host_index, host_count=host_count,
                               threads=threads)
    source = open_source(data_config)
    super().__init__(source.batches(spec, max(start_position, 0)),
                     source.host_size(host_index, host_count), start_position,
                     source.element_file(spec), skipped_before, known_skipped_ids)
    self.problem, self.source_name = source.problem(spec), source.name


def reconstruction_images(data_config, image_size: int, count: int) -> np.ndarray:
  """The first `count` decodable images of the source, centre-cropped: uint8 `[count, S, S, 3]`.

  The same on every host and every run (the shorter side resized to `image_size`, bicubic, then
  the centre square), so pictures drawn at different steps compare. A source with fewer
  decodable images repeats them.
  """
  source = open_source(data_config)
  max_pixels = data_config.get('max_image_pixels', image_decoding.DEFAULT_MAX_PIXELS)
  crops = (source.ordered_bytes()
           .map(lambda data: image_decoding.center_crop(data, image_size, max_pixels))
           .ignore_errors().take(count))
  images = list(crops.as_numpy_iterator())
  if not images:
    raise DataError('the data source has no decodable image for reconstruction pictures.')
  return np.stack([images[i % len(images)] for i in range(count)])
