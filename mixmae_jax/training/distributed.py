"""Joining a multi-process (multi-host) JAX run.

Without flags, a process joins the others when JAX can find them itself: on a TPU pod slice,
and in a SLURM job step, an Open MPI launch or a Kubernetes indexed Job with more than one
process. Elsewhere (a GPU cluster without those, several processes on one machine) every process
gets `--coordinator_address` (host:port of process 0, the same everywhere), `--num_processes`
and its own `--process_id`; `--num_processes=1` runs alone even inside a detected cluster.
Inconsistent flags stop the process before anything runs: a process given a count and an id but
no coordinator would otherwise train alone, silently.

Before waiting, each process says whom it waits for and where; when its peers have not all
joined after `timeout_seconds`, it stops with a message saying what to check (exit code 1),
rather than JAX's abort once its own deadline passes. Must run before anything touches a device.
"""
import logging
import os
import sys
import threading
import time
from typing import Optional

import socket

import jax

from mixmae_jax.training import peer_watch

log = logging.getLogger(__name__)

TIMEOUT_EXIT_CODE = 1
_JAX_DEADLINE_MARGIN = 60  # JAX's own deadline comes after ours, so ours is what is reported


class DistributedSetupError(ValueError):
  """Multi-process flags that cannot start a run; the message says which and the fix."""


def _int_env(name: str, default: int = 1) -> int:
  try:
    return int(os.environ.get(name, default))
  except ValueError:
    return default


def detected_cluster() -> Optional[str]:
  """The cluster JAX can join without flags ('TPU pod slice', 'SLURM', 'Open MPI',
  'Kubernetes'), when this process is one of several; else None."""
  env = os.environ
  hosts = [h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]
  if len(hosts) > 1 or 'MEGASCALE_COORDINATOR_ADDRESS' in env:
    return 'TPU pod slice'
  slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
  if all(v in env for v in slurm) and _int_env('SLURM_NTASKS') > 1:
    return 'SLURM'
  if 'OMPI_MCA_orte_hnp_uri' in env and _int_env('OMPI_COMM_WORLD_SIZE') > 1:
    return 'Open MPI'
  if 'KUBERNETES_SERVICE_HOST' in env and 'JOB_COMPLETION_INDEX' in env:
    return 'Kubernetes'
  return None


def flag_problem(coordinator_address: Optional[str], num_processes: Optional[int],
                 process_id: Optional[int], cluster: Optional[str]) -> Optional[str]:
  """Why these multi-process flags cannot work, or None."""
  if num_processes is not None and num_processes < 1:
    return f'--num_processes={num_processes} must be at least 1.'
  if (num_processes is not None and process_id is not None and
      not 0 <= process_id < num_processes):
    return (f'--process_id={process_id} must lie in [0, --num_processes={num_processes}): '
            f'process ids count from 0.')
  if cluster is not None or num_processes == 1:
    return None
  if not coordinator_address and (num_processes is not None or process_id is not None):
    return (f'--num_processes={num_processes} --process_id={process_id} without '
            f'--coordinator_address: this process would train alone. Give every process '
            f'--coordinator_address=HOST:PORT of process 0 (the same on all of them).')
  if coordinator_address and (num_processes is None or process_id is None):
    return ('--coordinator_address needs --num_processes and --process_id too (or a SLURM, '
            'Open MPI or Kubernetes launch that JAX reads them from).')
  return None


def _watch(done: threading.Event, timeout_seconds: float, waiting_for: str, advice: str) -> None:
  """Say every 30 s that we still wait; past the timeout, explain and exit."""
  started = time.monotonic()
  while True:
    left = timeout_seconds - (time.monotonic() - started)
    if done.wait(max(min(30.0, left), 0.0)):
      return
    waited = time.monotonic() - started
    if waited >= timeout_seconds:
      sys.stderr.write(f'error: {waiting_for}: not all processes joined within '
                       f'{timeout_seconds:.0f} s (--initialization_timeout). {advice}\n')
      sys.stderr.flush()
      os._exit(TIMEOUT_EXIT_CODE)  # pylint: disable=protected-access  (JAX holds the thread)
    log.warning('%s: still waiting (%.0f of %.0f s)', waiting_for, waited, timeout_seconds)


def coordinator_port_problem(coordinator_address: str) -> Optional[str]:
  """Why process 0 cannot serve at `coordinator_address` (its port is taken: another process
  was given --process_id=0, or an earlier run still holds it), or None."""
  host, _, port = coordinator_address.rpartition(':')
  if not port.isdigit():
    return None  # JAX reports a malformed address itself
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    try:
      probe.bind(('', int(port)))
    except OSError as e:
      return (f'process 0 cannot serve as the coordinator at {coordinator_address}: port {port} '
              f'is in use ({e.strerror}). Was another process given --process_id=0 (each needs '
              f'its own id, 0 to N-1), or is an earlier run still running on {host or "it"}?')
  return None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_seconds: float = 300.0,
               peer_timeout: float = 60.0) -> None:
  """Join the other processes when this is one of several (then watch them: a lost peer ends
  this process with exit code 1 after `peer_timeout` seconds, `peer_watch`); else do
  nothing."""
  cluster = detected_cluster()
  problem = flag_problem(coordinator_address, num_processes, process_id, cluster)
  if problem:
    raise DistributedSetupError(problem)
  if num_processes == 1 or (cluster is None and not coordinator_address):
    return
  if coordinator_address:
    if process_id == 0:
      problem = coordinator_port_problem(coordinator_address)
      if problem:
        raise DistributedSetupError(problem)
      peers = ('process 1' if num_processes == 2 else f'processes 1-{num_processes - 1}')
      waiting_for = (f'process 0 of {num_processes} (the coordinator, at {coordinator_address})'
                     f' waiting for {peers}')
    else:
      waiting_for = (f'process {process_id} of {num_processes} waiting for the coordinator '
                     f'(process 0) at {coordinator_address}')
    advice = (f'Check that all {num_processes} processes were started with '
              f'--coordinator_address={coordinator_address} --num_processes={num_processes} and '
              f'their own --process_id, and that {coordinator_address} is reachable from every '
              f'host.')
  else:
    waiting_for = f'joining the {cluster} cluster\'s other processes'
    advice = f'Check that every process of the {cluster} job started and can reach the others.'
  log.info('%s (up to %.0f s)', waiting_for, timeout_seconds)
  # CPU processes reduce over gloo; GPU and TPU ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  done = threading.Event()
  threading.Thread(target=_watch, args=(done, timeout_seconds, waiting_for, advice),
                   name='distributed-watch', daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=int(timeout_seconds) + _JAX_DEADLINE_MARGIN,
                               heartbeat_timeout_seconds=peer_watch.jax_heartbeat(peer_timeout))
  except (ValueError, RuntimeError) as e:
    raise DistributedSetupError(f'{waiting_for}: JAX could not start the run ({e}). '
                                f'{advice}') from e
  finally:
    done.set()
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  use_service_barriers()
  peer_watch.start(jax.process_index(), jax.process_count(), peer_timeout)


def use_service_barriers() -> None:
  """Orbax's barriers through the coordination service rather than a device all-gather.

  A background save meets the other processes from its writer thread while the loop's thread
  runs the training step's collectives; two threads issuing device collectives in different
  orders on different processes deadlock (seen with gloo on CPU), barriers in the service do
  not.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint  # noqa: F401  pylint: disable=import-outside-toplevel  (defines it)
  name = 'experimental_orbax_use_distributed_barrier'
  if name in flags.FLAGS:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    setattr(flags.FLAGS, name, True)
