"""What a training loop (pretraining, fine-tuning, probing) decides before its first step: the
run's length from the config and the data (`plan_run`), and where compiled programs are cached
(`use_compilation_cache`).

Around the steps, the loops also use `stop_signal.py` (preemption by SIGTERM), `data_position.py`
(what a checkpoint records of the input so a resumed run reads the same batches) and
`step_metrics.py` (metrics kept on the devices, checked and logged).
"""
import dataclasses
import logging
import os
import time

import jax

from mixmae_jax.training import config_checks
from mixmae_jax.training.optimizer import scaled_learning_rate

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """Step counts and sizes derived from the config and the data set."""
  dataset_size: int
  steps_per_epoch: int
  total_steps: int
  warmup_steps: int
  per_host_batch: int
  peak_lr: float


def plan_run(config, dataset_size: int, process_count: int) -> RunPlan:
  steps_per_epoch = max(dataset_size // config.batch_size, 1)
  total = (config.num_train_steps if config.num_train_steps > 0 else
           int(round(config.num_epochs * steps_per_epoch)))
  warmup = (config.warmup_steps if config.warmup_steps >= 0 else
            int(round(config.warmup_epochs * steps_per_epoch)))
  if warmup >= total:
    raise config_checks.ConfigError(
        f'invalid config:\n  warmup ({warmup} steps from warmup_epochs={config.warmup_epochs} / '
        f'warmup_steps={config.warmup_steps}) must be shorter than the run ({total} steps).')
  return RunPlan(dataset_size, steps_per_epoch, total, warmup,
                 config.batch_size // process_count,
                 scaled_learning_rate(config.base_lr, config.batch_size))


COMPILATION_CACHE = 'compilation_cache'
# Without a size bound JAX writes cache entries in place and reads them without a lock, so a
# process sharing the directory (another run, a host's other processes, a test worker) can load
# a half-written program and crash in native code. With a bound, every read and write holds a
# file lock (and the oldest entries go when the cache outgrows it).
CACHE_MAX_BYTES = 8 << 30


def use_compilation_cache(setting: str, workdir: str) -> str:
  """Point JAX's persistent compilation cache where `setting` says: 'auto' keeps a cache the
  environment already set (JAX_COMPILATION_CACHE_DIR) and otherwise uses
  WORKDIR/compilation_cache, so a resumed run loads its compiled programs instead of compiling
  them again; '' turns it off; anything else is the directory (local or gs://). Returns it."""
  if setting == 'auto':
    setting = jax.config.jax_compilation_cache_dir or (
        workdir.rstrip('/') + '/' + COMPILATION_CACHE if '://' in workdir else
        os.path.join(os.path.abspath(workdir), COMPILATION_CACHE))
  if setting:
    jax.config.update('jax_compilation_cache_dir', setting)
    if jax.config.jax_compilation_cache_max_size == -1 and '://' not in setting and \
        can_lock():
      stamp_access_times(setting)
      jax.config.update('jax_compilation_cache_max_size', CACHE_MAX_BYTES)
    log.info('compiled programs are cached in %s', setting)
  return setting


def can_lock() -> bool:
  """Whether JAX can lock a bounded cache: it needs the filelock package (a core requirement
  here; without it, a bound would make every cache write fail)."""
  try:
    import filelock  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


# JAX's names for a bounded cache's files: each entry `<key>-cache` and its last use `<key>-atime`
ENTRY_SUFFIX, ACCESS_SUFFIX = '-cache', '-atime'


def stamp_access_times(directory: str) -> int:
  """Give every entry of a cache written unbounded (by an earlier version, or with the bound
  off) the last-use stamp a bounded cache keeps beside it: without one, JAX's eviction fails on
  that entry and no new program is cached. Returns how many were stamped."""
  if not os.path.isdir(directory):
    return 0
  now = time.time_ns().to_bytes(8, 'little')
  names = set(os.listdir(directory))
  stamped = 0
  for name in names:
    stamp = name[:-len(ENTRY_SUFFIX)] + ACCESS_SUFFIX
    if name.endswith(ENTRY_SUFFIX) and stamp not in names:
      with open(os.path.join(directory, stamp), 'wb') as f:
        f.write(now)
      stamped += 1
  return stamped
