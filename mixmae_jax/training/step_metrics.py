"""A loop's metrics: kept on the devices until a logging, evaluation or checkpoint step, checked
for non-finite values when they come to the host (`StepMetrics`), so the loop never waits for
the devices in between; averaged and written to the training log (`summarize`, `TrainingLog`)."""
import logging
from typing import Any, Dict, List, Tuple

import jax
import numpy as np

from mixmae_jax.training.data_position import DataInfo

log = logging.getLogger(__name__)


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
