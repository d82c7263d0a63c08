"""What a run keeps at the top of its workdir besides checkpoints and metrics.

- `lease.json`: who runs here (host, pid, start, a heartbeat every 30 s). A second run on the
  same workdir (a scheduler's requeue racing the old job, a command typed twice) refuses to start
  and names the holder. A lease is stale, and taken over with a warning, when its heartbeat is
  older than two minutes or when it names a process on this host that no longer exists.
- `status.json`: `state` is `running`, `preempted` (stopped by SIGTERM after saving: rerun the
  same command to resume), `finished` or `failed` (with the error), with the last saved `step`
  and the `exit_code` the command returns for it.
- `config.json`: the resolved config, written at start (checkpoints hold it too).

Exit codes of `python -m mixmae_jax.train` / `finetune`: 0 finished, 75 preempted (EX_TEMPFAIL:
a temporary failure, rerun to resume), 1 anything else (the status file has the error).
Only process 0 writes these files; every process learns whether the lease was taken.
"""
import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Iterator, Optional

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from mixmae_jax.training.run_control import Preempted

log = logging.getLogger(__name__)

LEASE, STATUS, CONFIG = 'lease.json', 'status.json', 'config.json'
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0
FINISHED_EXIT_CODE, FAILED_EXIT_CODE, PREEMPTED_EXIT_CODE = 0, 1, 75


class WorkdirError(RuntimeError):
  """A workdir this run cannot hold: in use by another run, or not writable."""


class WorkdirInUse(WorkdirError):
  """Another live run holds the workdir's lease."""


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _write_json(path: epath.Path, record: Dict[str, Any]) -> None:
  """Replace a small JSON file whole: locally through a rename, so no reader sees half of it."""
  text = json.dumps(record, indent=1, sort_keys=True) + '\n'
  if '://' in str(path):
    path.write_text(text)
    return
  temporary = path.parent / f'.{path.name}.{os.getpid()}.tmp'
  temporary.write_text(text)
  os.replace(temporary, path)


def _read_json(path: epath.Path) -> Optional[Dict[str, Any]]:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, ValueError):
    return None


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


class Lease:
  """The right to run in a workdir, kept fresh by a heartbeat thread while held."""

  def __init__(self, workdir: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
               stale_seconds: float = STALE_SECONDS):
    self.path = epath.Path(workdir) / LEASE
    self.heartbeat_seconds, self.stale_seconds = heartbeat_seconds, stale_seconds
    self.record = {'host': socket.gethostname(), 'pid': os.getpid(), 'token': uuid.uuid4().hex,
                   'started': _now(), 'heartbeat_unix': time.time()}
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def stale_reason(self, holder: Dict[str, Any]) -> Optional[str]:
    """Why a lease record no longer protects anything, or None while its holder lives."""
    age = time.time() - float(holder.get('heartbeat_unix', 0))
    if (holder.get('host') == self.record['host'] and str(holder.get('pid')).isdigit() and
        not _process_alive(int(holder['pid']))):
      return f'process {holder["pid"]} on this host is gone'
    if age > self.stale_seconds:
      return f'its last heartbeat is {age:.0f} s old (stale after {self.stale_seconds:.0f} s)'
    return None

  def _create_exclusively(self) -> bool:
    """Write our record if no lease file exists; False when one does."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if '://' in str(self.path):  # object stores have no O_EXCL: check, write, read back
      if self.path.exists():
        return False
      _write_json(self.path, self.record)
      time.sleep(1.0)
      return (_read_json(self.path) or {}).get('token') == self.record['token']
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(json.dumps(self.record, indent=1, sort_keys=True) + '\n')
    return True

  def _holder(self) -> Dict[str, Any]:
    """The lease file's record; one being written by a run starting right now is waited for."""
    for _ in range(10):
      holder = _read_json(self.path)
      if holder is not None:
        return holder
      time.sleep(0.2)
    # Still unreadable: a torn write of a run that died at once; as old as its file.
    return {'pid': '?', 'host': '?', 'heartbeat_unix': self.path.stat().mtime}

  def acquire(self) -> None:
    """Take the lease, or raise WorkdirInUse naming the live holder."""
    if not self._create_exclusively():
      holder = self._holder()
      reason = self.stale_reason(holder)
      if reason is None:
        age = time.time() - float(holder.get('heartbeat_unix', 0))
        raise WorkdirInUse(
            f'{self.path.parent} is in use by another run: pid {holder.get("pid")} on host '
            f'{holder.get("host")}, started {holder.get("started")}, last heartbeat {age:.0f} s '
            f'ago. Two runs on one workdir would corrupt it: stop that run or wait for it to '
            f'end (its lease is taken over once its heartbeat is {self.stale_seconds:.0f} s '
            f'old), or use another --workdir.')
      log.warning('taking over the lease of %s: %s (holder: pid %s on %s)', self.path.parent,
                  reason, holder.get('pid'), holder.get('host'))
      _write_json(self.path, self.record)
    self._thread = threading.Thread(target=self._beat, name='workdir-lease', daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      holder = _read_json(self.path) or {}
      if holder.get('token') != self.record['token']:
        log.error('the lease of %s was taken over by pid %s on %s; this run no longer owns the '
                  'workdir.', self.path.parent, holder.get('pid'), holder.get('host'))
        return
      self.record['heartbeat_unix'] = time.time()
      try:
        _write_json(self.path, self.record)
      except OSError as e:  # a storage hiccup: the next beat retries
        log.warning('could not renew the lease of %s: %s', self.path.parent, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if (_read_json(self.path) or {}).get('token') == self.record['token']:
      self.path.unlink()


class Claim:
  """A run's hold on its workdir: the lease, the status file and the resolved config."""

  def __init__(self, workdir: str, lease: Optional[Lease]):
    self.workdir, self.lease = workdir, lease
    self.step: Optional[int] = None
    self.total_steps: Optional[int] = None

  def status(self, state: str, exit_code: Optional[int] = None, **extra) -> None:
    if self.lease is None:  # only the process holding the lease writes
      return
    record = {'state': state, 'step': self.step, 'total_steps': self.total_steps,
              'updated': _now(), 'host': self.lease.record['host'],
              'pid': self.lease.record['pid'], **extra}
    if exit_code is not None:
      record['exit_code'] = exit_code
    _write_json(epath.Path(self.workdir) / STATUS, record)

  def saved(self, step: int) -> None:
    """A checkpoint of `step` is written: the status says how far a rerun resumes from."""
    self.step = step
    self.status('running')


def _agreed(ok: bool) -> bool:
  """Process 0's `ok`, on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok, np.int32)))


@contextlib.contextmanager
def claim(workdir: str, config=None, lease: Optional[Lease] = None) -> Iterator[Claim]:
  """Hold `workdir` for one run: take the lease (or raise WorkdirInUse), write config.json and
  `running`; on the way out record `finished`, `preempted` or `failed` and free the lease."""
  primary = jax.process_index() == 0
  error: Optional[Exception] = None
  if primary:
    lease = lease or Lease(workdir)
    try:
      lease.acquire()
    except WorkdirInUse as e:
      error = e
    except OSError as e:
      error = WorkdirError(f'cannot write to the workdir {workdir}: {type(e).__name__}: {e}. '
                           f'Make it writable or choose another --workdir.')
  if not _agreed(error is None):
    raise error or WorkdirError(f'process 0 could not take the lease of {workdir}; see its log.')
  held = Claim(workdir, lease if primary else None)
  try:
    if primary and config is not None:
      (epath.Path(workdir) / CONFIG).write_text(config.to_json_best_effort(indent=2) + '\n')
    held.status('running')
    yield held
    held.status('finished', FINISHED_EXIT_CODE)
  except Preempted as e:
    held.step = e.step
    held.status('preempted', PREEMPTED_EXIT_CODE)
    raise
  except BaseException as e:
    held.status('failed', FAILED_EXIT_CODE, error=f'{type(e).__name__}: {e}'[:2000])
    raise
  finally:
    if primary:
      lease.release()
