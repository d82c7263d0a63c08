"""What a run keeps at the top of its workdir besides checkpoints and metrics.

- `lease.json`: who runs here (host, pid, start, a heartbeat every 30 s). A second run on the
  same workdir (a scheduler's requeue racing the old job, a command typed twice) refuses to start
  and names the holder. A lease is stale, and taken over with a warning, when its heartbeat is
  older than two minutes or when it names a process on this host that no longer exists.
  A run whose lease was taken over while it was frozen (a scheduler's suspend, a VM pause, an
  NFS stall) finds that out before its next write and stops (`LeaseLost`): it never writes a
  checkpoint, a metric or the status into the workdir another run now holds.
- `status.json`: `state` is `starting` (a new workdir whose run has not started its steps yet),
  `running`, `preempted` (stopped by SIGTERM after saving: rerun the same command to resume),
  `finished` or `failed` (with the error), with the last committed `step` (a checkpoint of it is
  on storage) and the `exit_code` the command returns for it.
- `config.json`: the resolved config, written when the run starts its steps, after its
  checkpoints were found compatible (checkpoints hold it too). A run refused before that (another
  architecture, an unreadable checkpoint) leaves both files as the last run left them.

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

from mixmae_jax.training import peer_watch
from mixmae_jax.training.stop_signal import Preempted

log = logging.getLogger(__name__)

LEASE, STATUS, CONFIG = 'lease.json', 'status.json', 'config.json'
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0
FINISHED_EXIT_CODE, FAILED_EXIT_CODE, PREEMPTED_EXIT_CODE = 0, 1, 75


class WorkdirError(RuntimeError):
  """A workdir this run cannot hold: in use by another run, or not writable."""


class WorkdirInUse(WorkdirError):
  """Another live run holds the workdir's lease."""


class LeaseLost(WorkdirError):
  """Another run took this run's lease over (this one was frozen past the stale time)."""


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _write_json(path: epath.Path, record: Dict[str, Any]) -> None:
  """Replace a small JSON file whole: locally through a rename, so no reader sees half of it."""
  _write_text(path, json.dumps(record, indent=1, sort_keys=True) + '\n')


def _write_text(path: epath.Path, text: str) -> None:
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


def _sane(holder: Any, path: epath.Path) -> Dict[str, Any]:
  """A lease record with the fields other runs read, of the right types; anything else (a torn
  or hand-edited file, another program's JSON) counts as a record as old as the file."""
  if not isinstance(holder, dict):
    holder = {}
  out = {k: v for k, v in holder.items() if isinstance(v, (str, int, float))}
  try:
    out['heartbeat_unix'] = float(holder['heartbeat_unix'])
    if out['heartbeat_unix'] != out['heartbeat_unix']:  # NaN
      raise ValueError
  except (KeyError, TypeError, ValueError):
    out['heartbeat_unix'] = path.stat().mtime
  for key in ('pid', 'host', 'started', 'token'):
    out[key] = str(out.get(key, '?'))
  return out


def describe_age(age: float) -> str:
  """'42 s ago', or for a clock ahead of ours '3598 s ahead of this host's clock'."""
  if age >= 0:
    return f'{age:.0f} s ago'
  return f"{-age:.0f} s ahead of this host's clock (are the hosts' clocks set?)"


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
    self.lost_to: Optional[Dict[str, Any]] = None  # the record that replaced ours

  def stale_reason(self, holder: Dict[str, Any]) -> Optional[str]:
    """Why a lease record no longer protects anything, or None while its holder lives."""
    age = time.time() - float(holder['heartbeat_unix'])
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
        return _sane(holder, self.path)
      time.sleep(0.2)
    # Still unreadable: a torn write of a run that died at once; as old as its file.
    return _sane({}, self.path)

  def acquire(self) -> None:
    """Take the lease, or raise WorkdirInUse naming the live holder."""
    if not self._create_exclusively():
      holder = self._holder()
      reason = self.stale_reason(holder)
      if reason is None:
        age = time.time() - holder['heartbeat_unix']
        raise WorkdirInUse(
            f'{self.path.parent} is in use by another run: pid {holder.get("pid")} on host '
            f'{holder.get("host")}, started {holder.get("started")}, last heartbeat '
            f'{describe_age(age)}. Two runs on one workdir would corrupt it: stop that run or '
            f'wait for it to '
            f'end (its lease is taken over once its heartbeat is {self.stale_seconds:.0f} s '
            f'old), or use another --workdir.')
      log.warning('taking over the lease of %s: %s (holder: pid %s on %s)', self.path.parent,
                  reason, holder.get('pid'), holder.get('host'))
      _write_json(self.path, self.record)
    self._thread = threading.Thread(target=self._beat, name='workdir-lease', daemon=True)
    self._thread.start()

  def held(self) -> bool:
    """Whether the lease file still holds our record (False once another run took it over; a
    file that cannot be read right now gives the benefit of the doubt)."""
    if self.lost_to is not None:
      return False
    try:
      holder = _read_json(self.path)
    except OSError:
      return True
    if holder is None and not self.path.exists():
      holder = {}
    if holder is not None and (not isinstance(holder, dict) or
                               holder.get('token') != self.record['token']):
      self.lost_to = holder if isinstance(holder, dict) else {}
      log.error('the lease of %s was taken over by pid %s on %s; this run no longer owns the '
                'workdir and stops before writing anything more.', self.path.parent,
                self.lost_to.get('pid'), self.lost_to.get('host'))
    return self.lost_to is None

  def require(self) -> None:
    """Raise LeaseLost unless this run still holds the lease (run before every write)."""
    if not self.held():
      raise LeaseLost(
          f'another run (pid {self.lost_to.get("pid")} on host {self.lost_to.get("host")}) took '
          f'over {self.path.parent} while this one was not heard from for over '
          f'{self.stale_seconds:.0f} s (frozen or suspended?); this run stopped without writing '
          f'anything more there. Nothing of the other run was touched.')

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      if not self.held():
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
  """A run's hold on its workdir: the lease, the status file and the resolved config.

  Nothing is written until `start` (called once the checkpoints were found compatible), except
  `starting` in a workdir that has no status yet; every write first checks the lease.
  """

  def __init__(self, workdir: str, lease: Optional[Lease], config=None):
    self.workdir, self.lease, self.config = workdir, lease, config
    previous = _read_json(epath.Path(workdir) / STATUS) if lease is not None else None
    self.previous = previous if isinstance(previous, dict) else None
    step = (self.previous or {}).get('step')
    self.step: Optional[int] = step if isinstance(step, int) else None
    self.total_steps: Optional[int] = None
    self.started = False
    self._lock = threading.Lock()  # the checkpoint writer thread reports commits too

  def require(self) -> None:
    """Raise LeaseLost unless this run still holds its lease (process 0, which alone writes
    the workdir's records; no collective, so it may run beside a background save's own. The
    other processes of a run whose process 0 stopped are ended by `peer_watch`)."""
    if self.lease is not None:
      self.lease.require()

  def start(self) -> None:
    """The run passed its checks and starts its steps: write config.json and `running`."""
    self.require()
    if self.lease is not None and self.config is not None:
      _write_text(epath.Path(self.workdir) / CONFIG,
                  self.config.to_json_best_effort(indent=2) + '\n')
    self.started = True
    self.status('running')

  def status(self, state: str, exit_code: Optional[int] = None, before_start: bool = False,
             **extra) -> None:
    """Write status.json (process 0, while it holds the lease). Before `start` only where no
    status was, or with `before_start` (a preemption during start-up: the last run's step)."""
    if self.lease is None or not self.lease.held():
      return
    if not self.started and self.previous is not None and not before_start:
      return  # keep what the last run recorded until this one really starts
    with self._lock:
      record = {'state': state, 'step': self.step, 'total_steps': self.total_steps,
                'updated': _now(), 'host': self.lease.record['host'],
                'pid': self.lease.record['pid'], **extra}
      if exit_code is not None:
        record['exit_code'] = exit_code
      _write_json(epath.Path(self.workdir) / STATUS, record)

  def lost_peer(self, message: str) -> None:
    """Another process of the run died: record `failed` and free the lease (the process is
    about to exit without unwinding)."""
    self.status('failed', FAILED_EXIT_CODE, error=message[:2000])
    if self.lease is not None:
      self.lease.release()

  def committed(self, step: int) -> None:
    """A checkpoint of `step` is on storage: the status says how far a rerun resumes from."""
    self.step = step if self.step is None else max(step, self.step)
    self.status('running')


def _agreed(ok: bool) -> bool:
  """Process 0's `ok`, on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok, np.int32)))


def lease_settings(config) -> Dict[str, float]:
  """Lease timing from a config's `lease_heartbeat_seconds` / `lease_stale_seconds`."""
  get = config.get if config is not None else {}.get
  return {'heartbeat_seconds': float(get('lease_heartbeat_seconds', HEARTBEAT_SECONDS)),
          'stale_seconds': float(get('lease_stale_seconds', STALE_SECONDS))}


@contextlib.contextmanager
def claim(workdir: str, config=None, lease: Optional[Lease] = None) -> Iterator[Claim]:
  """Hold `workdir` for one run: take the lease (or raise WorkdirInUse); the run calls
  `start()` to write config.json and `running`; on the way out record `finished`, `preempted`
  or `failed` and free the lease."""
  primary = jax.process_index() == 0
  error: Optional[Exception] = None
  if primary:
    lease = lease or Lease(workdir, **lease_settings(config))
    try:
      lease.acquire()
    except WorkdirInUse as e:
      error = e
    except OSError as e:
      error = WorkdirError(f'cannot write to the workdir {workdir}: {type(e).__name__}: {e}. '
                           f'Make it writable or choose another --workdir.')
  if not _agreed(error is None):
    raise error or WorkdirError(f'process 0 could not take the lease of {workdir}; see its log.')
  held = Claim(workdir, lease if primary else None, config)
  undo = peer_watch.on_peer_lost(lambda message: held.lost_peer(message))
  try:
    held.status('starting')
    yield held
    held.status('finished', FINISHED_EXIT_CODE)
  except Preempted as e:
    if e.step is not None:
      held.step = e.step
    finished = (held.previous or {}).get('state') == 'finished'
    held.status('preempted', PREEMPTED_EXIT_CODE, before_start=not finished)
    raise
  except BaseException as e:
    held.status('failed', FAILED_EXIT_CODE, error=f'{type(e).__name__}: {e}'[:2000])
    raise
  finally:
    undo()
    if primary:
      lease.release()
