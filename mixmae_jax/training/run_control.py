"""What every training loop here (pretraining, fine-tuning, probing) does around its steps.

The run's length from the config and the data (`plan_run`); metrics kept on the devices until a
logging, evaluation or checkpoint step and checked for non-finite values when they come to the
host (`StepMetrics`), so the loop never waits for the devices in between; preemption by SIGTERM
(`StopSignal`, `Preempted`); and the per-host data positions and skipped files a checkpoint
records so a resumed run reads the same batches and counts the same bad files once
(`all_hosts`, `DataInfo`, `resume_position`, `resume_skips`).
"""
import dataclasses
import logging
import os
import signal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

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
    if jax.config.jax_compilation_cache_max_size == -1 and '://' not in setting:
      jax.config.update('jax_compilation_cache_max_size', CACHE_MAX_BYTES)
    log.info('compiled programs are cached in %s', setting)
  return setting


class StopSignal:
  """SIGTERM (preemption) stops the run cleanly, from the moment the signal is installed.

  During start-up (restoring, listing or preparing data, compiling) nothing new exists to save,
  so the signal raises `Preempted` at once; once the loop calls `steps_begin()`, it asks for a
  checkpoint and a clean exit at the next step (or, while the loop waits for input, of the step
  before). With several processes, JAX's preemption service picks one step all of them stop
  at. Use as a context manager to put the previous handler back.
  """

  def __init__(self, during_startup: bool = True):
    self._received, self._raise_now = False, during_startup
    self._previous = None
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: the caller handles signals
        pass

  def _handle(self, signum, frame):
    del frame
    self._received = True
    if self._raise_now:
      self._raise_now = False
      log.warning('received signal %d during start-up: exiting', signum)
      raise Preempted(None)
    log.warning('received signal %d: saving a checkpoint and exiting', signum)

  def steps_begin(self) -> None:
    self._raise_now = False

  @property
  def received(self) -> bool:
    return self._received

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received

  def __enter__(self) -> 'StopSignal':
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


class Preempted(Exception):
  """The run stopped on SIGTERM: at `step` after saving a checkpoint of it, or during start-up
  (`step` None) with nothing new to save."""

  def __init__(self, step: Optional[int]):
    if step is None:
      message = ('stopped during start-up on request; nothing new to save. Rerun the same '
                 'command to start (or resume)')
    else:
      message = (f'stopped at step {step} on request, after saving a checkpoint of it; rerun '
                  f'the same command to resume')
    super().__init__(message)
    self.step = step


def all_hosts(values: List[int]) -> List[List[int]]:
  """Every process's copy of a few ints, in process order."""
  if jax.process_count() == 1:
    return [list(values)]
  gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
  return np.asarray(gathered).reshape(jax.process_count(), -1).tolist()


# How many skipped files' ids a checkpoint keeps per host, so a resumed run does not count them
# again; beyond that the count stays right but a re-skipped file may be counted twice.
RECORDED_SKIPS = 16


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """Where a host's stream is after a batch: its position, the distinct undecodable elements
  skipped so far (count, and the ids of the first few) and the first few skipped names."""
  position: int = 0
  skipped: int = 0
  skipped_ids: Tuple[int, ...] = ()
  skipped_names: Tuple[str, ...] = ()

  def as_ints(self) -> List[int]:
    """A fixed-length row of ints (for gathering over hosts)."""
    ids = list(self.skipped_ids[:RECORDED_SKIPS])
    return [self.position, self.skipped] + ids + [-1] * (RECORDED_SKIPS - len(ids))


def batches_with_positions(data) -> Iterator[Tuple[Dict[str, np.ndarray], DataInfo]]:
  """(batch, DataInfo) for each batch of a resumable input: where the stream is travels with
  its batch through device prefetch to the checkpoint."""
  for batch in data:
    yield batch, DataInfo(data.position, data.skipped, tuple(data.skipped_ids),
                          tuple(data.skipped_names))


def data_meta(rows: List[List[int]]) -> Dict[str, Any]:
  """A checkpoint's record of every host's `DataInfo.as_ints()`."""
  return {'data_positions': [r[0] for r in rows], 'skipped_images': [r[1] for r in rows],
          'skipped_ids': [[i for i in r[2:] if i >= 0] for r in rows]}


def resume_skips(meta: Optional[Dict[str, Any]]) -> Tuple[int, Tuple[int, ...]]:
  """(distinct skips, their recorded ids) of this host from a checkpoint's metadata."""
  counts, ids = (meta or {}).get('skipped_images', []), (meta or {}).get('skipped_ids', [])
  if len(counts) != jax.process_count():
    return 0, ()
  i = jax.process_index()
  return int(counts[i]), tuple(ids[i]) if len(ids) == len(counts) else ()


def resume_position(meta: Dict[str, Any], step: int, per_host_batch: int) -> int:
  """This host's data position from a checkpoint's metadata.

  A different host count shards the files differently: the run restarts at the same epoch, and
  the data order differs from the original run from there on.
  """
  positions = meta.get('data_positions', [])
  if len(positions) == jax.process_count():
    return int(positions[jax.process_index()])
  log.warning('checkpoint written by %d hosts, now %d: data order differs from the original '
              'run after step %d.', len(positions), jax.process_count(), step)
  return step * per_host_batch


class NonFiniteLoss(FloatingPointError):
  pass


Metrics = Dict[str, Any]


_CHECKED = (('loss', 'loss'), ('grad_norm', 'gradient norm'), ('param_norm', 'parameter norm'))


def nonfinite_names(m: Metrics) -> str:
  """'non-finite gradient norm and parameter norm': what of one step's metrics is NaN or inf."""
  bad = [name for key, name in _CHECKED if key in m and not np.isfinite(float(m[key]))]
  return 'non-finite ' + ' and '.join(bad or ['metric'])


def _values(m: Metrics) -> str:
  return ', '.join(f'{name} {float(m[key]):.6g}' for key, name in _CHECKED if key in m)


class StepMetrics:
  """Each step's metrics, left on the devices until the loop has a reason to look.

  `sync()` brings what is pending to the host in one transfer and raises `NonFiniteLoss` naming
  the step range when any step was non-finite, so callers sync before every checkpoint; synced
  metrics wait there until `take()` hands them to the next log line, so none is dropped.
  """

  def __init__(self, last_checked: int):
    self.last_checked = last_checked
    self._pending: List[Tuple[int, Metrics]] = []  # replicated, on the devices
    self._checked: List[Tuple[int, Metrics]] = []  # first replica, on the host

  def add(self, step: int, metrics: Metrics) -> None:
    self._pending.append((step, metrics))

  def sync(self) -> None:
    fetched = [(s, jax.tree.map(lambda x: np.asarray(x)[0], m))
               for s, m in jax.device_get(self._pending)]
    self._pending = []
    for step, m in fetched:
      if m['nonfinite']:
        raise NonFiniteLoss(
            f'{nonfinite_names(m)} at step {step} ({_values(m)}; steps {self.last_checked + 1}-'
            f'{fetched[-1][0]} came since the last check). Stopping without saving; the last '
            f'good checkpoint is kept. Lower base_lr, set grad_clip_norm, or use '
            f'compute_dtype=float32.')
    if fetched:
      self.last_checked = fetched[-1][0]
      self._checked += fetched

  def take(self) -> List[Tuple[int, Metrics]]:
    """Every step's metrics since the last `take`, oldest first."""
    self.sync()
    out, self._checked = self._checked, []
    return out


_LATEST = ('lr', 'param_norm')  # reported as of the last step; the rest is averaged


def summarize(history: List[Tuple[int, Metrics]]) -> Dict[str, float]:
  """Mean loss, gradient norm and objective metrics over the logged steps; the latest lr and
  parameter norm."""
  latest = history[-1][1]
  averaged = [k for k in latest if k not in _LATEST and k != 'nonfinite']
  out = {k: float(np.mean([m[k] for _, m in history])) for k in averaged}
  out.update({k: float(latest[k]) for k in _LATEST})
  return out


class TrainingLog:
  """Writes each log step's line: console (primary host), metrics.jsonl and TensorBoard.

  Losses and gradient norms are averaged over every step since the last line; the count of
  distinct undecodable files the input pipeline skipped (this host's) is said when it grows,
  with the first few names.
  """

  def __init__(self, metric_log, batch_size: int, primary: bool):
    self.metric_log, self.batch_size, self.primary = metric_log, batch_size, primary
    self.reported_skips = 0

  def write(self, step: int, history: List[Tuple[int, Metrics]], progress,
            data_info: DataInfo, examples_per_epoch: int,
            data_wait: float = 0.0) -> Dict[str, float]:
    """`data_wait`: mean seconds per step the loop waited for its next batch (input-bound when
    it is a large share of the step)."""
    steps_per_sec = progress.steps_per_second(step)
    scalars = summarize(history)
    scalars.update(images_per_sec=steps_per_sec * self.batch_size,
                   epoch=data_info.position / max(examples_per_epoch, 1),
                   skipped_images=data_info.skipped, data_wait_seconds=data_wait,
                   data_wait_share=min(1.0, data_wait * steps_per_sec))
    note = None
    if data_info.skipped > self.reported_skips:
      self.reported_skips = data_info.skipped
      names = ', '.join(data_info.skipped_names[:3])
      more = ' ...' if data_info.skipped > len(data_info.skipped_names[:3]) else ''
      note = (f'{data_info.skipped} undecodable file(s) skipped so far' +
              (f' ({names}{more})' if names else ''))
    if self.primary:
      print(progress.line(step, scalars, steps_per_sec, note), flush=True)
    self.metric_log.write(step, scalars)
    return scalars
