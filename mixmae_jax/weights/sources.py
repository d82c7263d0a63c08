"""Downloading an official file: a direct URL, a Google Drive id (`gdown`) or a file on the
Hugging Face Hub (`huggingface_hub`, which honours `HF_ENDPOINT`). `MIXMAE_JAX_MIRROR`, when
set, replaces every source with `<mirror>/<file_name>` (an internal server of an air-gapped
cluster, or a test's). Each writes to the temporary path it is given; the caller verifies and
renames.
"""
import os
import shutil
import tempfile
import urllib.request

from mixmae_jax.weights.cache import WeightsError
from mixmae_jax.weights.table import Release

MIRROR_ENV = 'MIXMAE_JAX_MIRROR'
TIMEOUT_SECONDS = 60
EXTRA = "pip install 'mixmae_jax[weights]'"


def from_url(url: str, path: str) -> None:
  """Stream `url` into `path`; a transfer that ends short of its Content-Length is an error."""
  request = urllib.request.Request(url, headers={'User-Agent': 'mixmae_jax'})
  with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, \
      open(path, 'wb') as f:
    expected = response.headers.get('Content-Length')
    shutil.copyfileobj(response, f, 1 << 22)
  size = os.path.getsize(path)
  if expected is not None and size != int(expected):
    raise WeightsError(f'the transfer from {url} ended after {size} of {expected} bytes')


def from_hub(location: str, path: str) -> None:
  try:
    from huggingface_hub import hf_hub_download  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightsError(f'files on the Hugging Face Hub are fetched with huggingface_hub: '
                       f'{EXTRA}') from e
  repo_id, _, file_name = location.rpartition('/')
  with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as directory:
    got = hf_hub_download(repo_id, file_name, local_dir=directory,
                          endpoint=os.environ.get('HF_ENDPOINT') or None)
    os.replace(got, path)


def from_drive(file_id: str, path: str) -> None:
  try:
    import gdown  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightsError(f'Google Drive files are fetched with gdown: {EXTRA}') from e
  if gdown.download(id=file_id, output=path, quiet=True) is None:
    raise WeightsError(f'Google Drive refused file {file_id} (quota, or not public)')


def fetch(release: Release, path: str) -> None:
  """Download `release`'s official file to `path`; a WeightsError names the address and where a
  file downloaded by hand goes."""
  mirror = os.environ.get(MIRROR_ENV)
  try:
    if mirror:
      from_url(f'{mirror.rstrip("/")}/{release.file_name}', path)
    elif release.source == 'url':
      from_url(release.location, path)
    elif release.source == 'hf':
      from_hub(release.location, path)
    else:
      from_drive(release.location, path)
  except Exception as e:  # pylint: disable=broad-except  (network, HTTP, the clients' own)
    if os.path.exists(path):
      os.unlink(path)
    where = f'{mirror.rstrip("/")}/{release.file_name}' if mirror else release.address
    raise WeightsError(
        f'could not download {release.name} from {where} ({type(e).__name__}: {e}). Offline? '
        f'Download {release.file_name} by hand from {release.address} and place it at '
        f'{os.path.join(os.path.dirname(path), release.file_name)}.') from e
