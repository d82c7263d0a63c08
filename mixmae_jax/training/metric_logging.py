"""Training metrics out: `metrics.jsonl`, TensorBoard events, and a console progress line.

Only the primary process writes. TensorBoard events go through `tf.summary` when TensorFlow is
importable (it is wherever the input pipeline runs); without it the JSONL log is still written.
Work directories may be local or remote (`gs://...`, through etils.epath); remote object stores
cannot append, so there the whole (small) log is rewritten at each write.
"""
import datetime
import json
import logging
import time
from typing import List, Mapping, Optional

from etils import epath

log = logging.getLogger(__name__)


class MetricLog:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl and mirrors it to TB."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self._local = '://' not in str(workdir)
    self._tb = None
    if not enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      from tensorboard import summary as _  # pylint: disable=import-outside-toplevel,unused-import
      self._tb = tf.summary.create_file_writer(str(epath.Path(workdir) / 'tensorboard'))
    except ImportError:
      log.warning('TensorFlow or TensorBoard is not installed: no TensorBoard events, '
                      'metrics.jsonl only.')

  def _lines(self) -> List[str]:
    if not self.path.exists():
      return []
    return [line for line in self.path.read_text().splitlines() if line.strip()]

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}})
    if self._local:
      with self.path.open('a') as f:
        f.write(record + '\n')
    else:
      self.path.write_text('\n'.join(self._lines() + [record]) + '\n')
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      with self._tb.as_default(step=int(step)):
        for k, v in scalars.items():
          if isinstance(v, (int, float)):
            tf.summary.scalar(k, v)
      self._tb.flush()

  def truncate_after(self, step: int) -> None:
    """Drop records past `step`: a resumed run rewrites the steps a lost run logged."""
    if not self.enabled or not self.path.exists():
      return
    kept = [line for line in self._lines() if json.loads(line)['step'] <= step]
    self.path.write_text(''.join(line + '\n' for line in kept))


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
    eta = (str(datetime.timedelta(seconds=int((self.total - step) / steps_per_sec)))
           if steps_per_sec > 0 else '?')
    text = (f'step {step}/{self.total} ({100.0 * step / self.total:.1f}%) '
            f'loss {scalars["loss"]:.4f} lr {scalars["lr"]:.3e} '
            f'grad_norm {scalars["grad_norm"]:.3f} {scalars["images_per_sec"]:.1f} img/s '
            f'data wait {100 * scalars.get("data_wait_share", 0.0):.0f}% ETA {eta}')
    return f'{text} | {note}' if note else text
