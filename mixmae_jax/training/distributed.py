"""Joining a multi-process (multi-host) JAX run.

On a TPU pod slice JAX finds its peers itself; elsewhere (GPU clusters, several processes on one
machine) the coordinator address, process count and id are given. Must run before anything
touches a JAX device.
"""
import logging
import os
from typing import Optional

import jax

log = logging.getLogger(__name__)


def _on_multihost_tpu() -> bool:
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return len([h for h in hosts.split(',') if h]) > 1 or 'MEGASCALE_COORDINATOR_ADDRESS' in os.environ


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Call `jax.distributed.initialize` when this is one process of several; else do nothing."""
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id too.')
    # CPU processes reduce over gloo; GPU and TPU ignore this setting.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif _on_multihost_tpu():
    jax.distributed.initialize()
  else:
    return
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
