"""The pure per-device training step, written once for a named data-parallel axis.

`train_step(state, batch, base_rng) -> (state, metrics)` runs on one device's share of the batch;
`parallel.py` maps it over devices. It knows no objective: the model's `__call__` returns
{'loss', ...} and optionally {'metrics': {name: scalar}} averaged into the log. Every random draw
derives from (seed, step, device index, micro-batch, stream), so a resumed run draws exactly what
an uninterrupted one would.
"""
import dataclasses
import zlib
from typing import Any, Callable, Dict, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mixmae_jax.data import pixels

AXIS = 'batch'
# Named random streams, folded into the per-device key. Names not listed here fold in a hash.
STREAM_IDS = {'mask': 0, 'drop_path': 1, 'dropout': 2}
DEFAULT_STREAMS = tuple(STREAM_IDS)


@dataclasses.dataclass(frozen=True)
class Collectives:
  """What the step asks of the layout its state lives in (`parallel.py`): `gather` gives the
  params as the step computes with them, `reduce` averages gradients over the devices into the
  state's layout, `norm` is the global norm of a params-shaped tree."""
  gather: Callable[[Any], Any]
  reduce: Callable[[Any], Any]
  norm: Callable[[Any], jax.Array]


# Every device holds everything: nothing to gather, gradients all-reduced.
REPLICATED = Collectives(gather=lambda params: params,
                         reduce=lambda grads: jax.lax.pmean(grads, AXIS),
                         norm=optax.tree.norm)


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `params` is a plain nested dict of float32 arrays."""
  step: jax.Array
  params: Any
  opt_state: Any


def stream_id(name: str) -> int:
  return STREAM_IDS.get(name, zlib.crc32(name.encode()) % 2**31)


def step_rngs(key: jax.Array, streams: Sequence[str] = DEFAULT_STREAMS) -> Dict[str, jax.Array]:
  """One key per named stream, all derived from `key`."""
  return {name: jax.random.fold_in(key, stream_id(name)) for name in streams}


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                     image_size: int, batch_size: int = 2, in_chans: int = 3,
                     streams: Sequence[str] = DEFAULT_STREAMS) -> TrainState:
  """Fresh parameters and optimizer state (call under jit, or with eval_shape for shapes)."""
  images = jnp.zeros((batch_size, image_size, image_size, in_chans), jnp.float32)
  params_rng, other_rng = jax.random.split(rng)
  params = model.init({'params': params_rng, **step_rngs(other_rng, streams)}, images)['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def device_key(base_rng: jax.Array, step: jax.Array, axis_name: str = AXIS) -> jax.Array:
  """fold_in(fold_in(base, step), device index): distinct per device and step, reproducible."""
  return jax.random.fold_in(jax.random.fold_in(base_rng, step), jax.lax.axis_index(axis_name))


LossAndGrads = Callable[[Any, Any, jax.Array], Tuple[Tuple[jax.Array, Dict], Any]]


def mean_loss_and_grads(loss_and_grads: LossAndGrads, params: Any, inputs: Any, key: jax.Array,
                        grad_accum_steps: int) -> Tuple[Tuple[jax.Array, Dict], Any]:
  """`loss_and_grads(params, inputs, key) -> ((loss, aux metrics), grads)` averaged over
  micro-batches.

  `inputs` (a pytree of arrays [B_device, ...]) is split into `grad_accum_steps` micro-batches
  along axis 0; micro-batch i draws with fold_in(key, i), and one runs alone with `key` itself.
  """
  if grad_accum_steps == 1:
    return loss_and_grads(params, inputs, key)
  micro = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), inputs)

  def accumulate(carry, xs):
    index, micro_inputs = xs
    out = loss_and_grads(params, micro_inputs, jax.random.fold_in(key, index))
    return jax.tree.map(jnp.add, carry, out), None

  first = jax.eval_shape(loss_and_grads, params, jax.tree.map(lambda x: x[0], micro), key)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro))
  return jax.tree.map(lambda x: x / grad_accum_steps, total)


def apply_gradients(tx: optax.GradientTransformation, params: Any, opt_state: Any,
                    loss: jax.Array, grads: Any, lr: jax.Array,
                    aux: Dict[str, jax.Array] = None,
                    norm: Callable[[Any], jax.Array] = optax.tree.norm) -> Tuple[Any, Any, Dict]:
  """One optimizer update of `params` with device-averaged `grads`: (params, opt_state, metrics).

  `norm` is the layout's global norm (params and grads may be slices of the whole)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  grad_norm, param_norm = norm(grads), norm(params)
  metrics = {
      **(aux or {}),
      'loss': loss,
      'grad_norm': grad_norm,
      'param_norm': param_norm,
      'lr': lr,
      # Checked on the host before any checkpoint is written: a bad step is never saved.
      'nonfinite': ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)),
  }
  return params, opt_state, metrics


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    learning_rate: Callable[[Any], Any], *, pixel_mean: Sequence[float],
                    pixel_std: Sequence[float], grad_accum_steps: int = 1,
                    rng_streams: Sequence[str] = DEFAULT_STREAMS,
                    collectives: Collectives = REPLICATED,
                    axis_name: str = AXIS) -> Callable:
  """Build `train_step(state, batch, base_rng) -> (state, metrics)` for one device.

  batch: {'image': uint8 [B_device, H, W, 3]}, normalized here with the pixel mean and std;
  B_device is split into `grad_accum_steps` micro-batches (an objective that groups images
  groups them within each). Gradients and metrics are averaged over `axis_name`; `collectives`
  say where the state lives (`parallel.py`).
  """

  def micro_loss_and_grads(params, images, key):
    def loss_fn(p):
      out = model.apply({'params': p}, images, train=True, rngs=step_rngs(key, rng_streams))
      aux = {k: jnp.asarray(v, jnp.float32) for k, v in out.get('metrics', {}).items()}
      return out['loss'], aux
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def train_step(state: TrainState, batch: Dict[str, jax.Array],
                 base_rng: jax.Array) -> Tuple[TrainState, Dict[str, jax.Array]]:
    key = device_key(base_rng, state.step, axis_name)
    images = pixels.normalize(batch['image'], pixel_mean, pixel_std)
    (loss, aux), grads = mean_loss_and_grads(micro_loss_and_grads,
                                             collectives.gather(state.params), images, key,
                                             grad_accum_steps)
    loss, aux = jax.lax.pmean((loss, aux), axis_name)
    grads = collectives.reduce(grads)
    params, opt_state, metrics = apply_gradients(tx, state.params, state.opt_state, loss, grads,
                                                 learning_rate(state.step), aux,
                                                 collectives.norm)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
