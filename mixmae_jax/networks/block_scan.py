"""Scanning a stage's repeated blocks while its parameters stay stored one block at a time.

Unrolled, XLA compiles every block of a stage (18 in stage 3 of Base); under `nn.scan` it compiles
one and loops. `nn.scan` wants the blocks' params stacked, `[repeats, ...]` under one name, while
checkpoints, the official PyTorch names (`pytorch_names.py`) and `mixmae_jax.load` know
`layers_{i}/blocks_{j}/...`. `per_block_layout` puts `nn.map_variables` between the two: the
stored params keep the per-block layout, every call stacks them into the scan's view
(`stack_blocks`), and at init the scan's new stacked params are split back (`unstack_blocks`).
A params tree is therefore the same whether a model scans or not, and the two functions are
exact inverses for tools that want the stacked form.

A scanned step may hold `period` consecutive blocks (two for standard Swin, whose blocks
alternate between plain and shifted windows): block j is entry `j // period` of the stacked
`blocks_{j % period}`.
"""
import functools
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

SCANNED = 'scanned_blocks'  # name of the scan's (stacked) params inside a stage


def _block(j: int) -> str:
  return f'blocks_{j}'


def stack_blocks(params: Dict[str, Any], depth: int, period: int = 1) -> Dict[str, Any]:
  """Per-block stage params -> the scan's layout.

  {'blocks_0': t, ..., 'blocks_{depth-1}': t, other: ...} ->
  {SCANNED: {'blocks_k': t stacked [depth / period, ...] over blocks j = k mod period}, other}.
  Params without blocks (an empty tree) pass through.
  """
  if _block(0) not in params:
    return params
  out = {k: v for k, v in params.items() if not k.startswith('blocks_')}
  out[SCANNED] = {
      _block(k): jax.tree.map(lambda *xs: jnp.stack(xs),
                              *[params[_block(j)] for j in range(k, depth, period)])
      for k in range(period)
  }
  return out


def unstack_blocks(params: Dict[str, Any], depth: int, period: int = 1) -> Dict[str, Any]:
  """The scan's layout -> per-block stage params; the inverse of `stack_blocks`."""
  if SCANNED not in params:
    return params
  out = {k: v for k, v in params.items() if k != SCANNED}
  for j in range(depth):
    out[_block(j)] = jax.tree.map(lambda x, i=j // period: x[i],
                                  params[SCANNED][_block(j % period)])
  return out


def _on_params(fn: Callable[[Dict[str, Any]], Dict[str, Any]],
               variables: Dict[str, Any]) -> Dict[str, Any]:
  if 'params' not in variables:  # e.g. apply, where params come in but never go out
    return variables
  return {**variables, 'params': fn(dict(variables['params']))}


def per_block_layout(module_cls: type, depth: int, period: int = 1) -> type:
  """`module_cls` (whose params hold a SCANNED stack) with its params stored per block."""
  return nn.map_variables(
      module_cls, 'params',
      trans_in_fn=functools.partial(_on_params,
                                    functools.partial(stack_blocks, depth=depth, period=period)),
      trans_out_fn=functools.partial(_on_params,
                                     functools.partial(unstack_blocks, depth=depth,
                                                       period=period)),
      init=True)
