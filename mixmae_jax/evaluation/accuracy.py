"""Classification accuracy on a labelled split: top-1, top-5 and loss, summed over every device.

`make_eval_step(logits_fn, ...)` is the per-device step (`params, batch -> sums`), `evaluate`
runs it over a host's batches (`data.labelled.eval_batches`, padded rows have mask 0) and
returns means over all real examples of all hosts.
"""
from typing import Any, Callable, Dict, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixmae_jax.data import pixels
from mixmae_jax.training import parallel
from mixmae_jax.training.train_step import AXIS


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """[B] 1.0 where the label is among the k highest logits (k clipped to the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def make_eval_step(logits_fn: Callable, *, pixel_mean: Sequence[float],
                   pixel_std: Sequence[float], axis_name: str = AXIS) -> Callable:
  """`eval_step(params, batch) -> sums` of correct top-1/top-5, loss and count, over devices."""

  def eval_step(params: Any, batch: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
    images = pixels.normalize(batch['image'], pixel_mean, pixel_std)
    logits = logits_fn(params, images, False, {}).astype(jnp.float32)
    labels, mask = batch['label'], batch['mask']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    sums = {'top1': topk_correct(logits, labels, 1), 'top5': topk_correct(logits, labels, 5),
            'loss': loss, 'count': jnp.ones_like(loss)}
    return jax.lax.psum({k: jnp.sum(v * mask) for k, v in sums.items()}, axis_name)

  return eval_step


def sum_over_batches(p_step: Callable, params: Any,
                     batches: Iterable[Dict[str, np.ndarray]]) -> Any:
  """The first replica of the sum of `p_step(params, batch)` (a pmapped step whose outputs are
  already summed over devices) over a host's batches, on the host; `params` replicated."""
  totals = None
  for batch in batches:
    sums = p_step(params, parallel.shard(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(totals))


def evaluate(p_eval_step: Callable, params: Any, batches: Iterable[Dict[str, np.ndarray]]
             ) -> Dict[str, float]:
  """Mean top1, top5 (in %) and loss over every real example; `params` replicated."""
  totals = {k: float(v) for k, v in sum_over_batches(p_eval_step, params, batches).items()}
  count = max(totals.pop('count'), 1.0)
  return {'top1': 100.0 * totals['top1'] / count, 'top5': 100.0 * totals['top5'] / count,
          'loss': totals['loss'] / count, 'count': int(count)}
