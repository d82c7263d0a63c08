"""Test setup: 8 fake CPU devices (set before JAX is imported) and shared paths."""
import os
import pathlib
import tempfile
import time

import pytest

# Compilation dominates test time on CPU; -O0 compiles about 3x faster for tiny models.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# CI installs libtpu (the [tpu] extra) to compile for TPU topologies; the tests themselves run
# on CPU, so JAX must not try to open a TPU at start-up.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests and the CLI runs they start compile the same tiny programs again and again: share them
# through JAX's persistent compilation cache (inherited by subprocesses through the env).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'mixmae_jax_test_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# Shared by two test workers and the commands they start: a size bound makes JAX lock every
# read and write of it (unbounded, a reader can load a half-written entry and crash).
os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(8 << 30))
# A cache left by an unbounded run lacks the last-use stamps the bound needs (see run_control).
from mixmae_jax.training.run_control import stamp_access_times  # noqa: E402
stamp_access_times(os.environ['JAX_COMPILATION_CACHE_DIR'])

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO.parent / 'shared' / 'data' / 'imagenet-samples'


def _memory_maps() -> int:
  with open('/proc/self/maps') as f:
    return sum(1 for _ in f)


@pytest.fixture(autouse=True, scope='module')
def compiled_programs_freed_after_each_module():
  """Each program XLA:CPU compiles or loads maps its code in dozens of memory regions, held as
  long as JAX caches it. A test worker compiles thousands: past the kernel's limit on mappings
  (vm.max_map_count, 65,530 by default) the next compile or cache load fails to map its code and
  the worker dies with a segfault inside XLA. Dropping JAX's caches after every module keeps a
  worker far below it; a module that alone gets near it fails here, by name."""
  import gc  # pylint: disable=import-outside-toplevel
  yield
  import jax  # pylint: disable=import-outside-toplevel
  if not os.path.exists('/proc/self/maps'):
    return
  held = _memory_maps()
  jax.clear_caches()
  gc.collect()
  limit = int(pathlib.Path('/proc/sys/vm/max_map_count').read_text())
  assert held < limit // 2, (f'{held} memory mappings (limit {limit}) after this module: it '
                             'keeps too many compiled programs alive at once')


@pytest.fixture(autouse=True)
def no_input_reader_is_left_running():
  """Every test, including each real training run: a run that ended closed its input reader
  (a reader left behind holds its tf.data pipeline, threads and buffers for the life of the
  process)."""
  import threading  # pylint: disable=import-outside-toplevel
  yield
  # A reader caught inside a slow read when its input was closed ends when the read returns
  # (close() waits 10 s, then leaves it): on a loaded machine that can be later, not never.
  deadline = time.monotonic() + 60.0
  left = [t for t in threading.enumerate() if t.name == 'input-reader']
  for thread in left:
    thread.join(max(0.0, deadline - time.monotonic()))
  left = [t for t in left if t.is_alive()]
  assert not left, f'{len(left)} input reader thread(s) still running 60 s after the test'


@pytest.fixture
def imagenet_samples() -> pathlib.Path:
  """The 500 real ImageNet JPEGs beside the checkout; tests using them skip without them."""
  if not SHARED_SAMPLES.is_dir():
    pytest.skip(f'{SHARED_SAMPLES} is absent')
  return SHARED_SAMPLES


def tiny_pretraining_config(**overrides):
  """The MixMAE Base recipe shrunk to toy size (`:runlocal`), 16 images per step (2 per fake
  device), then `overrides` (flattened field names: `model.remat='block'`)."""
  from mixmae_jax.training.config_defaults import (  # pylint: disable=import-outside-toplevel
      pretraining_config, shrink_for_local_run)
  c = shrink_for_local_run(pretraining_config('mixmae', size='base'))
  c.batch_size = 16
  c.update_from_flattened_dict(overrides)
  return c


# ---- running the commands as a user does ----

RUNLOCAL_RECIPE = 'configs/mixmae_swin_base_w14_600ep.py:runlocal'


def cli_env(devices: int = 1) -> dict:
  """The environment of a command started by a test: `devices` fake CPU devices, this checkout
  first on the path."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                      '--xla_backend_optimization_level=0')
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def train_command(workdir, flags=(), config: str = RUNLOCAL_RECIPE,
                  module: str = 'mixmae_jax.train') -> list:
  import sys  # pylint: disable=import-outside-toplevel
  return [sys.executable, '-m', module, f'--config={config}', f'--workdir={workdir}', *flags]


def wait_for(predicate, process, timeout: float = 300.0) -> None:
  """Poll `predicate` until true; fail if `process` ends first or time runs out."""
  import time  # pylint: disable=import-outside-toplevel
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if process.poll() is not None:
      raise AssertionError(f'the process ended (rc {process.returncode}) first:\n' +
                           (process.stderr.read()[-3000:] if process.stderr else ''))
    time.sleep(0.02)
  raise TimeoutError('condition not met in time')


def error_lines(stderr: str) -> list:
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def write_official_classifier(path) -> object:
  """A MixMIM-Base classifier (3 classes, every weight 0.01) saved as the official code saves
  it, at `path`; returns its architecture. Needs PyTorch (skips without it)."""
  torch = pytest.importorskip('torch')
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mixmae_jax import architectures  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import pytorch_names  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks import swin  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks.classifier import ClassifierConfig  # pylint: disable=import-outside-toplevel
  arch = ClassifierConfig(encoder=swin.config('base'), num_classes=3)
  shapes = architectures.abstract_params(architectures.build_model(arch))
  params = jax.tree.map(lambda s: np.full(s.shape, 0.01, np.float32), shapes)
  torch.save({'model': {k: torch.tensor(v) for k, v in
                        pytorch_names.state_dict_from_params(params, arch).items()}}, path)
  return arch
