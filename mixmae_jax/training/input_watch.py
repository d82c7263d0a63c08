"""Waiting for the next batch without hanging: the host stream is read on its own thread.

The loop's thread waits for each batch in short slices, so that while it waits it can still
stop on SIGTERM (the step before is saved and the run exits as preempted) and can notice a
source that will never give another batch: a folder whose files were moved away (the input
stream drops every failed read like a bad image, so it would search forever) is reported within
`PROBE_SECONDS` of waiting, and any source that gives nothing for `data.stall_seconds` stops the
run with an error naming it.
"""
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional

from mixmae_jax.data import DataError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often a wait looks at the stop signal
PROBE_SECONDS = 15.0  # how long a wait goes before asking the source whether it can still read
_DONE = object()


class StopRequested(Exception):
  """SIGTERM arrived while the loop was waiting for a batch."""


class InputStalled(DataError):
  """The input gave no batch for too long, or its source can no longer be read."""


class WatchedInput:
  """Iterates `items` on a daemon thread, handing them over one at a time.

  `stop_requested()` is looked at while waiting (then `StopRequested` is raised);
  `problem()` (None while the source looks fine) every `probe_seconds` of a wait; after
  `stall_seconds` without an item, `InputStalled` names `source`. Errors of the reading thread
  are raised here, in the caller's thread. `close()` (or leaving a `with` block) ends the reading
  thread and closes `items`: a run that ends before its input does leaves no reader behind
  holding the pipeline and its buffers.
  """

  def __init__(self, items: Iterator[Any], source: str, stall_seconds: float,
               stop_requested: Callable[[], bool] = lambda: False,
               problem: Callable[[], Optional[str]] = lambda: None,
               probe_seconds: float = PROBE_SECONDS):
    self.source, self.stall_seconds, self.probe_seconds = source, stall_seconds, probe_seconds
    self.stop_requested, self.problem = stop_requested, problem
    self._queue: 'queue.Queue' = queue.Queue(maxsize=1)
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._read, args=(iter(items),),
                                    name='input-reader', daemon=True)
    self._thread.start()

  def _read(self, items: Iterator[Any]) -> None:
    try:
      for item in items:
        if not self._hand_over((True, item)):
          return
      self._hand_over((True, _DONE))
    except BaseException as e:  # pylint: disable=broad-except  (handed to the caller)
      self._hand_over((False, e))
    finally:
      # on this thread: a generator cannot be closed from another while it runs
      getattr(items, 'close', lambda: None)()

  def _hand_over(self, entry) -> bool:
    """Put `entry` in the queue; False (not put) once the consumer closed this input."""
    while not self._closed.is_set():
      try:
        self._queue.put(entry, timeout=POLL_SECONDS)
        return True
      except queue.Full:
        continue
    return False

  def close(self, timeout: float = 10.0) -> None:
    """Stop reading and close the source; waits up to `timeout` s for a read in progress (a
    source stuck inside a read is left to its daemon thread, with a log line)."""
    self._closed.set()
    self._thread.join(timeout)
    if self._thread.is_alive():
      log.info('the reader of %s is still inside a read; left to end on its own', self.source)

  def __enter__(self) -> 'WatchedInput':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __iter__(self) -> 'WatchedInput':
    return self

  def __next__(self) -> Any:
    started = probed = time.monotonic()
    while True:
      if self.stop_requested():
        raise StopRequested()
      try:
        ok, item = self._queue.get(timeout=POLL_SECONDS)
      except queue.Empty:
        now = time.monotonic()
        if now - probed >= self.probe_seconds:
          probed = now
          problem = self.problem()
          if problem:
            raise InputStalled(f'the input stopped: {problem}') from None
        if now - started >= self.stall_seconds:
          raise InputStalled(
              f'no batch came from {self.source} for {now - started:.0f} s '
              f'(data.stall_seconds={self.stall_seconds:g}): is the storage reachable and are the '
              f'files there? Rerun the same command to resume once it is.') from None
        continue
      if not ok:
        raise item
      if item is _DONE:
        raise StopIteration
      return item
