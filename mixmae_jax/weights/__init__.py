"""Pretrained weights by name: `mixmae_jax.load('mae_vit_base_patch16')`.

The first load of a name downloads the official file once into the cache (`$MIXMAE_JAX_CACHE`,
default `~/.cache/mixmae_jax`), checks its SHA-256 (the table's, else the one pinned at first
use), converts it once with the same converter as `mixmae-convert` and keeps the converted
checkpoint beside it; later loads open that checkpoint with neither network nor PyTorch. A file
downloaded by hand and placed in the cache under its published name is used as if downloaded.

  python -m mixmae_jax.weights list           # every name, its file, what it holds and scored
  python -m mixmae_jax.weights download NAME  # fetch and convert now (e.g. before going offline)
"""
import logging
import os
import shutil
from typing import List

from mixmae_jax.weights import cache, sources
from mixmae_jax.weights.cache import WeightsError
from mixmae_jax.weights.table import RELEASES, Release

log = logging.getLogger(__name__)
COMPLETE = 'converted.sha256'  # written last into a converted checkpoint: the source's hash


def names() -> List[str]:
  return sorted(RELEASES)


def release(name: str) -> Release:
  if name not in RELEASES:
    import difflib  # pylint: disable=import-outside-toplevel
    close = difflib.get_close_matches(name, RELEASES, n=3)
    hint = f' Did you mean {" or ".join(close)}?' if close else ''
    raise WeightsError(f'{name!r} is neither a checkpoint on disk nor a published release.{hint} '
                       f'`python -m mixmae_jax.weights list` shows every name.')
  return RELEASES[name]


def official_file(r: Release) -> str:
  """The verified official file in the cache, downloaded if it is not there (or not whole)."""
  path = cache.official_path(r.file_name)
  if os.path.exists(path):
    if cache.verified(path, r.file_name, r.sha256):
      return path
    log.warning('%s does not match its recorded SHA-256; kept as %s, downloading again', path,
                cache.set_aside(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = f'{path}.partial-{os.getpid()}'
  log.info('downloading %s (%s)', r.file_name, r.address)
  sources.fetch(r, partial)
  if not cache.verified(partial, r.file_name, r.sha256):
    aside = cache.set_aside(partial)
    raise WeightsError(f'the download of {r.name} does not match its recorded SHA-256 (kept as '
                       f'{aside}); the source may have changed, or the transfer was damaged.')
  os.replace(partial, path)
  return path


def _complete(directory: str, digest: str) -> bool:
  try:
    with open(os.path.join(directory, COMPLETE), encoding='ascii') as f:
      return f.read().strip() == digest
  except OSError:
    return False


def converted(name: str) -> str:
  """Our checkpoint of release `name`, fetching and converting it first when needed."""
  r = release(name)
  with cache.locked(name):
    directory = cache.converted_path(name)
    digest = r.sha256 or cache.pinned(r.file_name)
    if digest and _complete(directory, digest):
      return directory
    path = official_file(r)
    digest = r.sha256 or cache.pinned(r.file_name)
    from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
    work = f'{directory}.partial-{os.getpid()}'
    shutil.rmtree(work, ignore_errors=True)
    try:
      convert.to_ours(path, work, r.arch, **dict(r.options))
    except convert.ConversionError as e:
      raise WeightsError(f'{path} could not be converted as {r.arch}: {e}') from e
    with open(os.path.join(work, COMPLETE), 'w', encoding='ascii') as f:
      f.write(digest + '\n')
    if os.path.exists(directory):
      shutil.rmtree(directory)  # an earlier, incomplete conversion of the same file
    os.replace(work, directory)
    return directory


def load(name: str, step=None, dtype=None):
  """`loading.load` of release `name`'s converted checkpoint. A converted checkpoint that no
  longer passes its checks is kept aside and converted again from the official file."""
  from mixmae_jax.interop import loading  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training.checkpointing import CheckpointError  # pylint: disable=import-outside-toplevel
  directory = converted(name)
  try:
    return loading.load(directory, step, dtype)
  except CheckpointError as e:
    with cache.locked(name):
      if os.path.exists(directory):
        aside = cache.set_aside(directory)
        log.warning('the converted %s failed its checks (%s); kept as %s, converting again',
                    name, e, aside)
    return loading.load(converted(name), step, dtype)
