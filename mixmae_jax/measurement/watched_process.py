"""A child process run under a time limit and a host-memory ceiling, with its peak memory.

A TPU compile of a large unrolled step can grow past the host's RAM; left alone, the kernel's
out-of-memory killer ends it (and may take other processes with it) and all that is left is an
exit status of -9. Watching the child's resident memory and stopping it at a ceiling below the
machine's RAM turns that into a named failure, and the peak it reached (from the kernel's own
accounting, `wait4`) is the figure a user needs to size the machine that compiles the row.
"""
import dataclasses
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Optional, Sequence

from mixmae_jax.measurement import machine

_POLL_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Finished:
  returncode: int  # negative: the signal that ended it
  stdout: str
  stderr: str
  peak_rss_bytes: int  # the most resident memory it held (0 where the kernel does not say)
  stopped: Optional[str] = None  # why this module stopped it, None when it ended by itself

  @property
  def failure(self) -> Optional[str]:
    """One line naming why it failed, None when it exited 0."""
    if self.stopped:
      return self.stopped
    if self.returncode == 0:
      return None
    if self.returncode < 0:
      name = signal.Signals(-self.returncode).name
      why = ' (the host out-of-memory killer, most likely)' if name == 'SIGKILL' else ''
      fatal = _fatal_log_line(self.stderr)
      return (f'killed by {name}{why} at {self.peak_rss_bytes / 2**30:.1f} GiB resident'
              + (f': {fatal[:300]}' if fatal else ''))
    tail = (self.stderr.strip().splitlines() or ['no output'])[-1]
    return f'exit {self.returncode}: {tail[:300]}'


# a fatal abseil log line, as XLA and libtpu write before they abort: 'F1207 07:00:34.050377
# 3310 file.cc:1904] Check failed: ...'; what follows the thread id says where and why
_FATAL = re.compile(r'^F\d{4} [\d:.]+\s+\d+ (.+)$')


def _fatal_log_line(stderr: str) -> Optional[str]:
  """The first fatal log line's location and message, None when there is none."""
  return next((m.group(1).strip() for m in map(_FATAL.match, stderr.splitlines()) if m), None)


def run(argv: Sequence[str], timeout: float, max_rss_bytes: Optional[int] = None) -> Finished:
  """Runs `argv` to its end, or stops it (SIGKILL) past `timeout` seconds or `max_rss_bytes`
  resident; its output is kept in files so a chatty child never blocks on a full pipe."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    child = subprocess.Popen(argv, stdout=out, stderr=err, text=True)  # pylint: disable=consider-using-with
    status, usage, stopped = _watch(child.pid, timeout, max_rss_bytes)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    out.seek(0)
    err.seek(0)
    return Finished(child.returncode, out.read(), err.read(), usage.ru_maxrss * 1024, stopped)


def _watch(pid: int, timeout: float, max_rss_bytes: Optional[int]):
  """(wait status, rusage, why it was stopped or None) once the child has ended."""
  deadline, stopped = time.monotonic() + timeout, None
  while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
      return status, usage, stopped
    if stopped is None:
      rss = machine.resident_bytes(pid)
      if max_rss_bytes and rss > max_rss_bytes:
        stopped = (f'stopped at {rss / 2**30:.1f} GiB resident, past the host-memory ceiling '
                   f'of {max_rss_bytes / 2**30:.1f} GiB')
      elif time.monotonic() > deadline:
        stopped = f'no answer within {timeout:g} s'
      if stopped:
        os.kill(pid, signal.SIGKILL)
        continue
    time.sleep(_POLL_SECONDS)
