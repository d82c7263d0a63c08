"""How much TopK key selection costs in one attention layer, by method, side by side.

  python -m mixmae_jax.measurement.topk_attention_benchmark [--batch=4] [--tokens 200] \
      [--heads 12] [--head_dim 64] [--keys 49] [--repeats 20]

Times the jitted forward and backward pass of one attention layer (the defaults: four mixed
ViT-B/16 sequences of MixedAE, 200 tokens, K = 49) with every query attending to every key
(`dense`, no selection) and with each query keeping its top K keys:
- `threshold`: the k-th largest score found exactly by bisection on its bits, then dense
  attention with the rest masked (`layers.top_k_threshold_mask`, the default);
- `threshold_by_lax_top_k`: the same mask, with the k-th largest score read off `lax.top_k`;
- `top_k`: `lax.top_k` indices, softmax over the K scores, the K values gathered.
Prints the median milliseconds of each and its ratio to `dense`; the last line is JSON.
"""
import json
import statistics
import time
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from mixmae_jax.cli import command
from mixmae_jax.networks import layers


def _threshold_by_lax_top_k(q, k, v, keys):
  logits = layers.attention_logits(q, k)
  kth = jax.lax.top_k(jax.lax.stop_gradient(logits), keys)[0][..., -1:]
  probs = jax.nn.softmax(jnp.where(logits >= kth, logits, layers.MASKED_LOGIT), axis=-1)
  return jnp.einsum('bhqk,bkhd->bqhd', probs, v)


def methods(keys: int) -> Dict[str, Callable]:
  return {
      'dense': layers.attention_weights_and_values,
      'threshold': lambda q, k, v: layers.top_k_attention(q, k, v, keys, 'threshold')[0],
      'threshold_by_lax_top_k': lambda q, k, v: _threshold_by_lax_top_k(q, k, v, keys),
      'top_k': lambda q, k, v: layers.top_k_attention(q, k, v, keys, 'top_k')[0],
  }


def time_method(fn: Callable, q, k, v, repeats: int) -> float:
  """Median seconds of a jitted forward + backward pass."""
  step = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.square(fn(q, k, v))),
                                    argnums=(0, 1, 2)))
  jax.block_until_ready(step(q, k, v))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(q, k, v))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None) -> Dict[str, float]:
  fv = flags.FlagValues()
  for name, default, text in (('batch', 4, 'sequences'), ('tokens', 200, 'tokens per sequence'),
                              ('heads', 12, 'attention heads'), ('head_dim', 64, 'width per head'),
                              ('keys', 49, 'keys each query keeps (K)'),
                              ('repeats', 20, 'timed repeats (the median is reported)')):
    flags.DEFINE_integer(name, default, text, flag_values=fv)
  args, _ = command.parse(__doc__, fv, argv, 'topk_attention_benchmark')
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(args.batch, args.tokens, args.heads, args.head_dim)),
                         jnp.float32) for _ in range(3))
  device = jax.devices()[0]
  print(f'{device.device_kind} ({device.platform}), jax {jax.__version__}: {args.batch} x '
        f'{args.tokens} tokens, {args.heads} heads of {args.head_dim}, K = {args.keys}, '
        f'forward + backward, float32')
  seconds = {name: time_method(fn, q, k, v, args.repeats) for name, fn in
             methods(args.keys).items()}
  for name, s in seconds.items():
    print(f'{name:24s} {s * 1e3:8.1f} ms  {s / seconds["dense"]:5.2f}x dense')
  print(json.dumps(seconds), flush=True)
  return seconds


if __name__ == '__main__':
  command.run_main(main)
