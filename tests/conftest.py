"""Test setup: 8 fake CPU devices (set before JAX is imported) and shared paths."""
import os
import pathlib
import tempfile

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

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO.parent / 'shared' / 'data' / 'imagenet-samples'


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
