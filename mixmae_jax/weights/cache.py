"""The weights cache: official files as published, their pinned hashes, and the converted
checkpoints beside them, safe against interrupted downloads and concurrent loads.

  $MIXMAE_JAX_CACHE (default ~/.cache/mixmae_jax)/
    <file_name>                  the official file, whole (downloads land under a temporary
                                 name and are renamed only when complete and verified)
    <file_name>.sha256           its SHA-256, pinned at first use when the table has none
    <file_name>.damaged-<time>   a file that failed its check, kept aside (never deleted)
    converted/<name>/            our checkpoint of it (`mixmae_jax.load` opens it)
    locks/<name>.lock            held while a process fetches or converts <name>
"""
import contextlib
import fcntl
import hashlib
import os
import time
from typing import Iterator, Optional

ENV = 'MIXMAE_JAX_CACHE'


class WeightsError(Exception):
  """A release that cannot be fetched, verified or converted; the message says what to do."""


def root() -> str:
  return os.path.abspath(os.path.expanduser(
      os.environ.get(ENV) or os.path.join('~', '.cache', 'mixmae_jax')))


def official_path(file_name: str) -> str:
  return os.path.join(root(), file_name)


def converted_path(name: str) -> str:
  return os.path.join(root(), 'converted', name)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
  """Hold `name`'s lock: a second process loading the same release waits, then finds it done."""
  directory = os.path.join(root(), 'locks')
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, f'{name}.lock'), 'a+', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      digest.update(chunk)
  return digest.hexdigest()


def pinned(file_name: str) -> Optional[str]:
  try:
    with open(official_path(file_name) + '.sha256', encoding='ascii') as f:
      return f.read().split()[0]
  except (OSError, IndexError):
    return None


def pin(file_name: str, digest: str) -> None:
  path = official_path(file_name) + '.sha256'
  with open(path + '.partial', 'w', encoding='ascii') as f:
    f.write(f'{digest}  {file_name}\n')
  os.replace(path + '.partial', path)


def set_aside(path: str) -> str:
  """Move a file that failed its check out of the way, keeping it; returns where it went."""
  aside = f'{path}.damaged-{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}'
  os.replace(path, aside)
  return aside


def verified(path: str, file_name: str, expected: Optional[str]) -> bool:
  """Whether the file at `path` has the recorded hash (the table's, else the pinned one). With
  neither, the file is trusted and its hash pinned for every later use."""
  digest = sha256(path)
  want = expected or pinned(file_name)
  if want is None:
    pin(file_name, digest)
    return True
  return digest == want
