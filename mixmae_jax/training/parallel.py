"""Data parallelism in one place: map the per-device step over local devices, move data there.

The step is written with `axis_name='batch'` collectives (`lax.pmean`, `lax.axis_index`) and
knows nothing of devices. This module wraps it with `jax.pmap` (multi-host: every process runs
the same program on its local devices and the collectives span all of them). Swapping in
`jax.jit` + `shard_map` means changing `data_parallel`, `replicate`, `unreplicate` and `shard`
only; the step stays as it is.
"""
import collections
import itertools
from typing import Any, Callable, Iterable, Iterator, Tuple

import jax
import numpy as np

from mixmae_jax.training.train_step import AXIS


def data_parallel(step_fn: Callable, donate_state: bool = True) -> Callable:
  """pmap `step_fn(state, batch, rng)` over local devices; the state buffers are donated."""
  return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=(0,) if donate_state else ())


def _device_axis_sharding() -> jax.NamedSharding:
  """The sharding pmap gives its outputs; inputs must match it or the step recompiles."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
  return jax.NamedSharding(mesh, jax.P(AXIS))


def replicate(tree: Any) -> Any:
  """Copy a host or single-device pytree onto every local device (leading device axis)."""
  n, sharding = jax.local_device_count(), _device_axis_sharding()
  return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), sharding), tree)


def first_replica(tree: Any) -> Any:
  """The first local device's shard of each leaf, [1, ...], without running any computation."""
  return jax.tree.map(lambda x: x.addressable_data(0), tree)


def unreplicate(tree: Any) -> Any:
  """The first replica of a replicated pytree, as host numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(first_replica(tree)))


def shard(batch: Any) -> Any:
  """[per_host, ...] numpy leaves -> [local_devices, per_device, ...] arrays on the devices."""
  n = jax.local_device_count()

  def put(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(f'host batch of {x.shape[0]} does not split over {n} local devices.')
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  sharding = _device_axis_sharding()
  return jax.tree.map(lambda x: jax.device_put(put(x), sharding), batch)


def prefetch(batches: Iterable[Tuple[Any, Any]], size: int) -> Iterator[Tuple[Any, Any]]:
  """Keep `size` batches on the devices ahead of the consumer.

  `batches` yields (host_batch, info); info (e.g. the data position) travels alongside
  unchanged, so the consumer knows exactly which data it has trained on.
  """
  queue = collections.deque()
  iterator = iter(batches)

  def enqueue(n):
    for host_batch, info in itertools.islice(iterator, n):
      queue.append((shard(host_batch), info))

  enqueue(max(size, 1))
  while queue:
    yield queue.popleft()
    enqueue(1)
