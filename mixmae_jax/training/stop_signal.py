"""Preemption: SIGTERM stops a run cleanly, with a checkpoint of the step it stopped at."""
import logging
import signal
from typing import Optional

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


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
