"""Data parallelism in one place: where the training state lives, how the step is mapped over
the devices, and how data gets there.

The per-device step is written once, with `axis_name='batch'` collectives (`lax.pmean`,
`lax.axis_index`), and asks its layout for three more (`Collectives`): `gather` (the params as it
computes with them), `reduce` (gradients averaged over the devices, in the state's layout) and
`norm` (a global norm of a params-shaped tree). Two layouts:

- `ReplicatedLayout` (the default): `jax.pmap` over the local devices, a full copy of params and
  optimizer state on every device; multi-host, every process runs the same program and the
  collectives span all of them.
- `ShardedLayout` (`state_sharding='sharded'`, FSDP / ZeRO style): `jax.jit` + `jax.shard_map`
  over a mesh of all devices; every large leaf of the params, gradients and optimizer state is
  split over the data axis along one of its dimensions (`shard_spec`), the step all-gathers the
  params before the forward pass and reduce-scatters the gradients, and the optimizer updates
  each device's slice. The state's bytes per device fall by the device count; the full params and
  gradients still exist transiently inside the step.
"""
import collections
import itertools
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mixmae_jax.training.train_step import AXIS, REPLICATED, Collectives

# Leaves smaller than this stay replicated in the sharded layout: biases and norms cost a
# collective each and save nothing.
MIN_SHARDED_SIZE = 2**14
STATE_SHARDINGS = ('replicated', 'sharded')


# ---- the replicated (pmap) layout; the evaluation steps use these functions directly ----

def data_parallel(step_fn: Callable, donate_state: bool = True,
                  devices: Optional[Sequence] = None) -> Callable:
  """pmap `step_fn(state, batch, rng)` over the (local) devices; the state buffers are donated."""
  return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=(0,) if donate_state else (),
                  devices=devices)


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


def _abstract(shape, dtype, sharding=None) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


class ReplicatedLayout:
  """A full copy of the state on every local device (or on `devices`, e.g. the abstract devices
  of a TPU topology to compile for); the step runs under `jax.pmap`."""
  name = 'replicated'
  collectives = REPLICATED

  def __init__(self, devices: Optional[Sequence] = None):
    self.explicit_devices = devices
    self.devices = len(devices) if devices is not None else jax.local_device_count()

  def wrap(self, step_fn: Callable, donate: bool = True) -> Callable:
    return data_parallel(step_fn, donate, self.explicit_devices)

  def abstract_inputs(self, state: Any, batch: Any, rng: Any) -> Tuple[Any, Any, Any]:
    """The step's inputs as shapes, for compiling without devices: a leading device axis on
    the state and rng, and each device's share of the global batch `batch`."""
    n = self.devices
    return (jax.tree.map(lambda x: _abstract((n,) + x.shape, x.dtype), state),
            jax.tree.map(lambda x: _abstract((n, x.shape[0] // n) + x.shape[1:], x.dtype), batch),
            _abstract((n,) + rng.shape, rng.dtype))

  def place_state(self, host_tree: Any) -> Any:
    return replicate(host_tree)

  def place_batch(self, host_batch: Any) -> Any:
    return shard(host_batch)

  def place_rng(self, key: jax.Array) -> Any:
    return replicate(key)

  def for_saving(self, tree: Any) -> Any:
    """One copy of a placed tree for a checkpoint: host arrays."""
    return unreplicate(tree)

  def restore_shardings(self, *abstract_trees: Any) -> None:
    """Where a checkpoint's arrays are restored to before `place_state`: one device (None)."""
    del abstract_trees

  def single_copy(self, tree: Any) -> Any:
    """One copy of a placed tree as device arrays, for computations outside the step."""
    return jax.tree.map(lambda x: x.addressable_data(0)[0], tree)

  def device_copy(self, tree: Any) -> Any:
    """One replica copied into new buffers on the first device (dispatched, not waited for),
    so the next step may donate the state's buffers while a checkpoint reads the copy. With
    several processes the copies form one global array replicated over each process's first
    device, which is what a multi-host checkpoint writes (one process writes each array)."""
    copies = self.single_copy(tree)  # indexing the shard writes a new buffer
    if jax.process_count() == 1:
      return copies
    firsts = [next(d for d in jax.devices() if d.process_index == p)
              for p in range(jax.process_count())]
    sharding = NamedSharding(jax.sharding.Mesh(np.array(firsts), ('process',)), P())
    local = firsts[jax.process_index()]
    return jax.tree.map(lambda x: jax.make_array_from_single_device_arrays(
        x.shape, sharding, [jax.device_put(x, local)]), copies)


# ---- the sharded (FSDP) layout ----

def shard_spec(shape: Sequence[int], devices: int, min_size: int = MIN_SHARDED_SIZE) -> P:
  """Split a leaf along its largest dimension that the device count divides, if it is large
  enough; else keep it whole on every device."""
  if int(np.prod(shape, dtype=np.int64)) < min_size or devices == 1:
    return P()
  candidates = [(size, -d) for d, size in enumerate(shape) if size % devices == 0]
  if not candidates:
    return P()
  axis = -max(candidates)[1]
  return P(*([None] * axis), AXIS)


def _sharded_axis(spec: P) -> Optional[int]:
  return next((d for d, name in enumerate(spec) if name == AXIS), None)


def sharded_collectives(param_specs: Any, devices: int) -> Collectives:
  """The step's collectives when the leaves whose spec names the data axis are split."""
  def over_leaves(fn):
    return lambda tree: jax.tree.map(lambda x, s: fn(x, _sharded_axis(s)), tree, param_specs)

  def gather(x, axis):
    return x if axis is None else jax.lax.all_gather(x, AXIS, axis=axis, tiled=True)

  def reduce(g, axis):
    if axis is None:
      return jax.lax.pmean(g, AXIS)
    return jax.lax.psum_scatter(g, AXIS, scatter_dimension=axis, tiled=True) / devices

  def norm(tree):
    specs = jax.tree.leaves(param_specs)
    squares = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
    split = sum((q for q, s in zip(squares, specs) if _sharded_axis(s) is not None),
                jnp.zeros((), jnp.float32))
    whole = sum((q for q, s in zip(squares, specs) if _sharded_axis(s) is None),
                jnp.zeros((), jnp.float32))
    return jnp.sqrt(jax.lax.psum(split, AXIS) + whole)

  return Collectives(gather=over_leaves(gather), reduce=over_leaves(reduce), norm=norm)


class ShardedLayout:
  """Params, gradients and optimizer state split over the data axis of a mesh of `devices`
  (default: all devices of all hosts); the step runs under `jax.jit` + `jax.shard_map`.

  `abstract_state` (shapes, e.g. from `jax.eval_shape`) fixes each leaf's split.
  """
  name = 'sharded'

  def __init__(self, abstract_state: Any, devices: Optional[Sequence] = None,
               min_size: int = MIN_SHARDED_SIZE):
    self.mesh = jax.sharding.Mesh(np.array(devices if devices is not None else jax.devices()),
                                  (AXIS,))
    self.devices = self.mesh.size
    self.specs = jax.tree.map(lambda s: shard_spec(s.shape, self.devices, min_size),
                              abstract_state)
    self.collectives = sharded_collectives(self.specs.params, self.devices)

  def sharding(self, spec: P) -> NamedSharding:
    return NamedSharding(self.mesh, spec)

  def wrap(self, step_fn: Callable, donate: bool = True) -> Callable:
    """jit(shard_map(step)); the metrics get a leading axis of 1, as pmap's first replica."""
    mapped = jax.shard_map(step_fn, mesh=self.mesh, in_specs=(self.specs, P(AXIS), P()),
                           out_specs=(self.specs, P()), check_vma=False)

    def step(state, batch, rng):
      state, metrics = mapped(state, batch, rng)
      return state, jax.tree.map(lambda m: m[None], metrics)

    return jax.jit(step, donate_argnums=(0,) if donate else ())

  def place_state(self, tree: Any) -> Any:
    """Host arrays (or arrays restored already split) -> the state's split over the mesh."""
    def place(x, spec):
      sharding = self.sharding(spec)
      if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
      return jax.device_put(np.asarray(x), sharding)
    return jax.tree.map(place, tree, self.specs)

  def restore_shardings(self, abstract_params: Any, abstract_opt_state: Any) -> Tuple[Any, Any]:
    """Checkpoints restore straight into the split: no host holds the whole state."""
    return (jax.tree.map(lambda s: self.sharding(s), self.specs.params),
            jax.tree.map(lambda s: self.sharding(s), self.specs.opt_state))

  def place_batch(self, host_batch: Any) -> Any:
    """This host's [per_host, ...] leaves -> global arrays split over the data axis."""
    sharding = self.sharding(P(AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        host_batch)

  def place_rng(self, key: jax.Array) -> Any:
    return jax.device_put(key, self.sharding(P()))

  def abstract_inputs(self, state: Any, batch: Any, rng: Any) -> Tuple[Any, Any, Any]:
    """The step's inputs as shapes with their shardings, for compiling without devices."""
    return (jax.tree.map(lambda x, s: _abstract(x.shape, x.dtype, self.sharding(s)), state,
                         self.specs),
            jax.tree.map(lambda x: _abstract(x.shape, x.dtype, self.sharding(P(AXIS))), batch),
            _abstract(rng.shape, rng.dtype, self.sharding(P())))

  def for_saving(self, tree: Any) -> Any:
    """The global arrays themselves: each host writes its own slices, nothing is gathered."""
    return tree

  def single_copy(self, tree: Any) -> Any:
    return tree

  def device_copy(self, tree: Any) -> Any:
    """The global arrays copied into new buffers where they lie (each device its slice)."""
    return _copy_in_place(tree)


_copy_in_place = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def layout_for(name: str, abstract_state: Any, devices: Optional[Sequence] = None) -> Any:
  """The layout a config's `state_sharding` names (the sharded one over `devices`, default all;
  the replicated one over the local devices)."""
  if name == 'sharded':
    return ShardedLayout(abstract_state, devices)
  if name == 'replicated':
    return ReplicatedLayout(devices)
  raise ValueError(f'state_sharding={name!r}: use one of {", ".join(STATE_SHARDINGS)}.')


def prefetch(batches: Iterable[Tuple[Any, Any]], size: int,
             place: Callable[[Any], Any] = shard) -> Iterator[Tuple[Any, Any]]:
  """Keep `size` batches on the devices ahead of the consumer.

  `batches` yields (host_batch, info); info (e.g. the data position) travels alongside
  unchanged, so the consumer knows exactly which data it has trained on.
  """
  queue = collections.deque()
  iterator = iter(batches)

  def enqueue(n):
    for host_batch, info in itertools.islice(iterator, n):
      queue.append((place(host_batch), info))

  enqueue(max(size, 1))
  while queue:
    yield queue.popleft()
    enqueue(1)
