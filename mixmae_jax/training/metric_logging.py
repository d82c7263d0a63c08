"""Training metrics out: `metrics.jsonl`, TensorBoard events, console progress lines.

Only the primary process writes. TensorBoard events (scalars and the reconstruction pictures)
go through `tf.summary` when TensorFlow is importable (it is wherever the input pipeline runs);
without it the JSONL log is still written. Work directories may be local or remote
(`gs://...`, through etils.epath). Locally each record is appended; remote object stores cannot
append, so there records are buffered and the log is written whole at each checkpoint (a resumed
run drops records past its checkpoint anyway), at the end, and at most every
`REMOTE_FLUSH_SECONDS` in between: a record costs nothing, not a rewrite of the whole file.

A crash during an append can leave a torn last line; reading the log drops such lines with a
warning naming the file, so a resume never fails on them.
"""
import datetime
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional

import numpy as np
from etils import epath

log = logging.getLogger(__name__)

REMOTE_FLUSH_SECONDS = 600.0


class MetricLog:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl and mirrors it to TB."""

  def __init__(self, workdir: str, enabled: bool = True, remote: Optional[bool] = None):
    self.enabled = enabled
    self.guard: Callable[[], None] = lambda: None  # raises to stop a write (a lost lease)
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self.remote = ('://' in str(workdir)) if remote is None else remote
    self._tb = None
    self._lines: Optional[List[str]] = None  # remote: the whole log, as last read or written
    self._unflushed = False
    self._flushed_at = time.monotonic()
    if not enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      from tensorboard import summary as _  # noqa: F401  pylint: disable=import-outside-toplevel
      self._tb = tf.summary.create_file_writer(str(epath.Path(workdir) / 'tensorboard'))
    except ImportError:
      log.warning('TensorFlow or TensorBoard is not installed: no TensorBoard events, '
                  'metrics.jsonl only.')

  def read(self) -> List[str]:
    """The log's records (JSON objects with an integer `step`, one a line).

    Anything else (a torn line left by a crash while appending, a record edited by hand into a
    non-integer step, bytes that are not UTF-8) is left out with a warning naming the file and
    the lines, and appended to `metrics.jsonl.dropped` beside it, so nothing is lost.
    """
    if not self.path.exists():
      return []
    good, bad, dropped = [], [], []
    for number, raw in enumerate(self.path.read_bytes().splitlines(), 1):
      if not raw.strip():
        continue
      try:
        line = raw.decode('utf-8')
        step = json.loads(line)['step']
        if not isinstance(step, int) or isinstance(step, bool):
          raise TypeError(step)
        good.append(line)
      except (ValueError, KeyError, TypeError):
        bad.append(number)
        dropped.append(raw)
    if bad:
      aside = self.path.parent / (self.path.name + '.dropped')
      if self.enabled:
        with aside.open('ab') as f:
          f.write(b''.join(line + b'\n' for line in dropped))
      log.warning('%s: left out %d line(s) that are not whole records with an integer step '
                  '(line %s; a crash while appending leaves one); kept in %s', self.path,
                  len(bad), ', '.join(map(str, bad[:5])), aside)
    return good

  def records_at(self, step: int) -> List[Dict[str, Any]]:
    """The records logged at `step`."""
    records = [json.loads(line) for line in self.read()]
    return [r for r in records if r['step'] == step]

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record = json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}})
    self.guard()  # right before the write: the narrowest window for a frozen run
    if self.remote:
      if self._lines is None:
        self._lines = self.read()
      self._lines.append(record)
      self._unflushed = True
      if time.monotonic() - self._flushed_at > REMOTE_FLUSH_SECONDS:
        self.flush()
    else:
      with self.path.open('a') as f:
        f.write(record + '\n')
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      with self._tb.as_default(step=int(step)):
        for k, v in scalars.items():
          if isinstance(v, (int, float)):
            tf.summary.scalar(k, v)
      self._tb.flush()

  def image(self, step: int, name: str, picture: np.ndarray) -> None:
    """A uint8 [H, W, 3] picture as a TensorBoard image (nothing without TensorBoard)."""
    if not self.enabled or self._tb is None:
      return
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with self._tb.as_default(step=int(step)):
      tf.summary.image(name, np.asarray(picture, np.uint8)[None], max_outputs=1)
    self._tb.flush()

  def flush(self) -> None:
    """Remote logs: write the buffered records (the whole file, once)."""
    if self.enabled and self.remote and self._unflushed:
      self.path.write_text(''.join(line + '\n' for line in self._lines))
      self._unflushed, self._flushed_at = False, time.monotonic()

  def truncate_after(self, step: int) -> None:
    """Drop records past `step` (and torn lines): a resumed run rewrites the steps a lost run
    logged."""
    if not self.enabled or not self.path.exists():
      return
    kept = [line for line in self.read() if json.loads(line)['step'] <= step]
    text = ''.join(line + '\n' for line in kept)
    if self.remote:
      self.path.write_text(text)
    else:  # through a rename: a crash while rewriting keeps the old log whole
      temporary = self.path.parent / f'.{self.path.name}.tmp'
      temporary.write_text(text)
      os.replace(temporary, self.path)
    self._lines, self._unflushed = kept, False


def _plain(v):
  try:
    return v.item()
  except AttributeError:
    return v


class Progress:
  """Console line: step, percent, loss, lr, throughput and ETA.

  The throughput is that of the last interval; the ETA uses the mean time per step since the
  loop's first compiled step, evaluations and checkpoints included, so one slow interval moves
  it a little instead of multiplying it.
  """

  def __init__(self, total_steps: int, start_step: int, now: Optional[float] = None):
    self.total = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter() if now is None else now
    self._steps_timed, self._seconds = 0, 0.0

  def steps_per_second(self, step: int, now: Optional[float] = None) -> float:
    """The rate since the last call; the interval also counts towards the ETA's mean."""
    now = time.perf_counter() if now is None else now
    steps, seconds = step - self._last_step, max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    self._steps_timed += steps
    self._seconds += seconds
    return steps / seconds

  def eta_seconds(self, step: int) -> Optional[float]:
    if self._steps_timed <= 0:
      return None
    return (self.total - step) * self._seconds / self._steps_timed

  def line(self, step: int, scalars: Mapping[str, float], steps_per_sec: float,
           note: Optional[str] = None) -> str:
    del steps_per_sec  # the ETA uses the smoothed rate
    seconds = self.eta_seconds(step)
    eta = '?' if seconds is None else str(datetime.timedelta(seconds=int(seconds)))
    text = (f'step {step}/{self.total} ({100.0 * step / self.total:.1f}%) '
            f'loss {scalars["loss"]:.4f} lr {scalars["lr"]:.3e} '
            f'grad_norm {scalars["grad_norm"]:.3f} {scalars["images_per_sec"]:.1f} img/s '
            f'data wait {100 * scalars.get("data_wait_share", 0.0):.0f}% ETA {eta}')
    return f'{text} | {note}' if note else text


class WorkProgress:
  """Progress of a long job outside the training loop (k-NN features, probe statistics,
  preparing a data set): a log line at the start, every `every_seconds` and at the end."""

  def __init__(self, what: str, total: int, unit: str, every_seconds: float = 30.0,
               clock: Callable[[], float] = time.monotonic):
    self.what, self.total, self.unit, self.every = what, max(int(total), 0), unit, every_seconds
    self._clock = clock
    self.done = 0
    self._started = self._said = clock()

  def line(self) -> str:
    elapsed = max(self._clock() - self._started, 1e-9)
    rate = self.done / elapsed
    text = f'{self.what}: {self.done}'
    if self.total:
      text += f'/{self.total} {self.unit} ({100.0 * min(self.done / self.total, 1.0):.0f}%)'
    else:
      text += f' {self.unit}'
    text += f', {rate:.1f} {self.unit}/s'
    if self.total and rate > 0 and self.done < self.total:
      text += f', ETA {datetime.timedelta(seconds=int((self.total - self.done) / rate))}'
    return text

  def advance(self, n: int) -> None:
    self.done += n
    if self._clock() - self._said >= self.every:
      self._said = self._clock()
      log.info('%s', self.line())

  def over(self, items: Iterable[Any], count: Callable[[Any], int]) -> Iterator[Any]:
    """`items`, advancing by `count(item)` after each one; the last line when they run out."""
    log.info('%s: starting (%s %s)', self.what, self.total or '?', self.unit)
    for item in items:
      yield item
      self.advance(count(item))
    log.info('%s (done in %.0f s)', self.line(), self._clock() - self._started)
