"""Image folders as stream sources: listing them safely, sharding them over hosts, and the exact
per-epoch shuffle of their files (`folder_stream`), as `streams.py` describes for every source.

Listing follows links without loops or repeats and leaves out what is not a regular file; a
folder whose files vanish while a run reads them is noticed (`missing_files_problem`).
"""
import logging
import os
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

from mixmae_jax.data import DataError, DataMissing, image_decoding, streams

log = logging.getLogger(__name__)


def list_images(folder: str, field: str = 'data.image_folder') -> List[str]:
  """Every image file under `folder` (recursively, following links), sorted.

  Links are followed without loops or repeats: a directory reached twice (a link to a parent,
  two links to one place) is read once, and a file reached by several paths is listed once,
  under its first path in sorted order. Names with an image extension that are not regular
  files (a FIFO, a socket, a device, a broken link) are left out and counted in a warning:
  reading a FIFO would wait forever.
  """
  if not os.path.isdir(folder):
    raise DataMissing(
        f'{field}={folder!r} is not a directory. Point --config.{field} at a folder of images '
        f'(searched recursively), or set it to \'\' to use data.tfds_name or the demo images.')
  files, seen_dirs, seen_files, irregular = [], set(), set(), []
  for root, dirs, names in os.walk(folder, followlinks=True):
    identity = _identity(root)
    if identity in seen_dirs:  # reached again through a link: already listed
      dirs[:] = []
      continue
    seen_dirs.add(identity)
    dirs[:] = sorted(d for d in dirs if _identity(os.path.join(root, d)) not in seen_dirs)
    for name in sorted(names):
      path = os.path.join(root, name)
      if name.lower().endswith(streams.IMAGE_EXTENSIONS):
        (files if os.path.isfile(path) else irregular).append(path)
  if irregular:
    log.warning('%s=%r: left out %d name(s) that are not regular files (FIFOs, sockets, devices '
                'or broken links): %s', field, folder, len(irregular),
                ', '.join(sorted(irregular)[:3]))
  unique = []
  for path in sorted(files):
    identity = _identity(path)
    if identity not in seen_files:
      seen_files.add(identity)
      unique.append(path)
  if not unique:
    raise DataError(
        f'{field}={folder!r} holds no images ({" ".join(streams.IMAGE_EXTENSIONS)}, any case, '
        f'searched '
        f'recursively). Put images there or point --config.{field} at another folder.')
  return unique


def _identity(path: str) -> Tuple[int, int]:
  """(device, inode): the same for every path (link or not) that reaches one file or folder."""
  stat = os.stat(path)
  return stat.st_dev, stat.st_ino


def host_files(files: Sequence, host_index: int, host_count: int, what: str) -> list:
  """This host's share `files[host::hosts]`; an error naming `what` when it is empty."""
  share = list(files[host_index::host_count])
  if not share:
    raise DataError(f'host {host_index} of {host_count} gets no images: {what} has only '
                     f'{len(files)}. Use more images or fewer hosts.')
  return share


def folder_stream(files: Sequence[str], spec: streams.StreamSpec, start: int) -> tf.data.Dataset:
  """The host's endless (k, path) stream from element `start`, one fresh permutation per epoch."""
  n = len(files)
  paths = tf.constant(list(files))
  key = streams.stream_key(spec.seed, spec.host_index, streams.PERMUTATION)

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(tf.range(n), streams.fold_in(key, e))
    ks = e * n + tf.range(n, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((ks, tf.gather(paths, order)))

  epochs = tf.data.Dataset.range(start // n, streams.ENDLESS)
  return epochs.flat_map(epoch).skip(start % n)


def folder_element_index(files: Sequence[str], spec: streams.StreamSpec) -> Callable[[int], int]:
  """k -> the index in `files` of element k of the host's folder stream (as `folder_stream`
  orders it), for naming the files that fail to load."""
  n = len(files)
  key = streams.stream_key(spec.seed, spec.host_index, streams.PERMUTATION)
  orders = {}

  def index(k: int) -> int:
    epoch = k // n
    if epoch not in orders:
      orders.clear()  # epochs only move forward
      orders[epoch] = tf.random.experimental.stateless_shuffle(
          tf.range(n), streams.fold_in(key, tf.constant(epoch, tf.int64))).numpy()
    return int(orders[epoch][k % n])

  return index


def require_decodable(files: Sequence[str], what: str,
                      max_pixels: int = image_decoding.DEFAULT_MAX_PIXELS) -> None:
  """Fails fast where the endless stream would otherwise search forever for a good image."""
  found = (tf.data.Dataset.from_tensor_slices(list(files))
           .map(lambda path: tf.shape(image_decoding.decode_any(tf.io.read_file(path),
                                                                max_pixels)))
           .ignore_errors().take(1))
  if not list(found):
    raise DataError(f'none of the {len(files)} images of {what} can be decoded (or each '
                    f'declares more than data.max_image_pixels={max_pixels} pixels).')


# How many of a folder's files `missing_files_problem` looks at.
_PROBED_FILES = 64


def missing_files_problem(files: Sequence[str], what: str) -> Optional[str]:
  """Why a listed folder can no longer be read (every probed file gone or unreadable), or None.

  Asked when the stream has given nothing for a while: reading errors are dropped like bad
  images, so a folder whose files were moved away would otherwise be searched forever.
  """
  step = max(len(files) // _PROBED_FILES, 1)
  probed = list(files[::step])[:_PROBED_FILES]
  readable = sum(os.path.isfile(f) and os.access(f, os.R_OK) for f in probed)
  if probed and not readable:
    return (f'none of {len(probed)} of the {len(files)} files listed in {what} at start can be '
            f'read now (e.g. {probed[0]!r}): were they moved, deleted or unmounted? Put them back '
            f'and rerun the same command to resume.')
  return None
