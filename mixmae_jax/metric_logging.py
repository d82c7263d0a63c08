"""Training metrics out: `metrics.jsonl`, TensorBoard events, and a console progress line.

Only the primary process writes. TensorBoard events go through `tf.summary` when TensorFlow is
importable (it is wherever the input pipeline runs); without it the JSONL log is still written.
"""
import datetime
import json
import logging
import os
import time
from typing import Mapping, Optional


class MetricLog:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl and mirrors it to TB."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
    except ImportError:
      logging.warning('TensorFlow is not installed: no TensorBoard events, metrics.jsonl only.')

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      with self._tb.as_default(step=int(step)):
        for k, v in scalars.items():
          if isinstance(v, (int, float)):
            tf.summary.scalar(k, v)
      self._tb.flush()

  def truncate_after(self, step: int) -> None:
    """Drop records past `step`: a resumed run rewrites the steps a lost run logged."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
    with open(self.path, 'w') as f:
      f.writelines(kept)


def _plain(v):
  try:
    return v.item()
  except AttributeError:
    return v


class Progress:
  """Console line: step, percent, loss, lr, throughput and ETA from the recent rate."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def steps_per_second(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return rate

  def line(self, step: int, scalars: Mapping[str, float], steps_per_sec: float,
           note: Optional[str] = None) -> str:
    eta = datetime.timedelta(seconds=int((self.total - step) / max(steps_per_sec, 1e-9)))
    text = (f'step {step}/{self.total} ({100.0 * step / self.total:.1f}%) '
            f'loss {scalars["loss"]:.4f} lr {scalars["lr"]:.3e} '
            f'grad_norm {scalars["grad_norm"]:.3f} {scalars["images_per_sec"]:.1f} img/s '
            f'ETA {eta}')
    return f'{text} | {note}' if note else text
