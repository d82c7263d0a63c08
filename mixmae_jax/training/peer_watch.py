"""Noticing a lost peer in a multi-process run, and ending this process cleanly when one is.

JAX notices a dead process only when its heartbeats stop for `heartbeat_timeout_seconds` and
then aborts every survivor from C++ (SIGABRT, a stack trace, status.json still `running`). Here
each process instead writes a counter into the coordination service's key-value store every
few seconds and watches the others' counters; when one has not moved for `timeout_seconds` (or
the service itself is gone, with process 0), the watching process runs the registered
handlers (the workdir's: status `failed`, lease freed), prints one `error:` line naming the
lost process and exits with code 1. JAX's own deadline is set past ours (`jax_heartbeat`).
"""
import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, List

log = logging.getLogger(__name__)

LOST_PEER_EXIT_CODE = 1
_KEY = 'mixmae_jax/alive/{}'
_HANDLERS: List[Callable[[str], None]] = []


def jax_heartbeat(timeout_seconds: float) -> int:
  """JAX's heartbeat timeout for a run whose own peer timeout is `timeout_seconds`."""
  return int(max(100.0, timeout_seconds + 60.0))


def on_peer_lost(handler: Callable[[str], None]) -> Callable[[], None]:
  """Run `handler(message)` before this process exits for a lost peer; returns an undo."""
  _HANDLERS.append(handler)
  return lambda: _HANDLERS.remove(handler) if handler in _HANDLERS else None


def _lost(message: str) -> None:
  for handler in list(_HANDLERS):
    try:
      handler(message)
    except Exception as e:  # pylint: disable=broad-except  (exiting anyway)
      log.warning('while stopping for a lost peer: %s', e)
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  os._exit(LOST_PEER_EXIT_CODE)  # pylint: disable=protected-access  (peers may hold locks)


def _read(client, key: str):
  """A key's value, or None while it is not set yet."""
  try:
    return client.key_value_try_get(key)
  except Exception as e:  # pylint: disable=broad-except
    if 'NOT_FOUND' in str(e):
      return None
    raise


def _watch(client, process_id: int, num_processes: int, timeout_seconds: float) -> None:
  beat = max(min(timeout_seconds / 6.0, 5.0), 0.2)
  peers = [i for i in range(num_processes) if i != process_id]
  seen: Dict[int, str] = {}
  moved = {i: time.monotonic() for i in peers}
  count = 0
  while not _SHUTTING_DOWN.is_set():
    try:
      count += 1
      client.key_value_set(_KEY.format(process_id), str(count), allow_overwrite=True)
      for i in list(peers):
        value = _read(client, _KEY.format(i))
        if value == _DONE:  # it ended normally: nothing more to expect from it
          peers.remove(i)
        elif value is not None and value != seen.get(i):
          seen[i], moved[i] = value, time.monotonic()
    except Exception as e:  # pylint: disable=broad-except  (the service went away)
      if _SHUTTING_DOWN.is_set():
        return
      _lost(f'process {process_id} lost the coordination service (process 0) of this '
            f'{num_processes}-process run ({type(e).__name__}: {str(e).splitlines()[0][:200]}); '
            f'stopping. Rerun every process to resume from the last checkpoint.')
    silent = [i for i in peers if time.monotonic() - moved[i] > timeout_seconds]
    if silent:
      _lost(f'process {process_id} has not heard from process(es) {silent} of this '
            f'{num_processes}-process run for {timeout_seconds:.0f} s (--peer_timeout): they '
            f'died or hang. Stopping; rerun every process to resume from the last checkpoint.')
    time.sleep(beat)


_SHUTTING_DOWN = threading.Event()
_DONE = 'done'
_CLIENT: List = []


def stop() -> None:
  """This process is ending normally: stop watching, and tell the others not to wait for it."""
  if _SHUTTING_DOWN.is_set() or not _CLIENT:
    return
  _SHUTTING_DOWN.set()
  client, process_id = _CLIENT[0]
  try:
    client.key_value_set(_KEY.format(process_id), _DONE, allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except  (the service may be gone already)
    pass


def start(process_id: int, num_processes: int, timeout_seconds: float) -> None:
  """Watch the other processes of the run JAX has just joined."""
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  client = distributed.global_state.client
  if client is None or num_processes < 2:
    return
  _CLIENT.append((client, process_id))
  threading.Thread(target=_watch, args=(client, process_id, num_processes, timeout_seconds),
                   name='peer-watch', daemon=True).start()
