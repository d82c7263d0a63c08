"""Scanning a stage's repeated blocks, and the two layouts of their parameters.

Unrolled, XLA compiles every block of a stage (18 in stage 3 of Base); under `nn.scan` it compiles
one and loops. `nn.scan` wants the blocks' params stacked, `[repeats, ...]` under one name
(`SCANNED`), while the official PyTorch names (`pytorch_names.py`), conversion, fine-tuning and
`mixmae_jax.load` know `layers_{i}/blocks_{j}/...`. Two layouts, therefore:

- **per block** (what every tool outside a training state sees): `per_block_layout` puts
  `nn.map_variables` between the stored params and the scan, stacking them on every call
  (`stack_blocks`) and splitting them back at init (`unstack_blocks`). Each step pays a copy of
  the stage's params in and of its gradients out.
- **stacked** (a pretraining state with `scan_blocks=True`): the scan's own params are the state,
  optimizer moments included, so the step neither stacks nor splits. Checkpoints record which
  stages are stacked (`scanned_stages`) and `relayout` turns any params-shaped tree (params,
  AdamW's moments) from one layout into the other, so a run resumes in either layout and every
  loader sees per-block names.

A scanned step may hold `period` consecutive blocks (two for standard Swin, whose blocks
alternate between plain and shifted windows): block j is entry `j // period` of the stacked
`blocks_{j % period}`.
"""
import collections.abc
import functools
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCANNED = 'scanned_blocks'  # name of the scan's (stacked) params inside a stage


def _block(j: int) -> str:
  return f'blocks_{j}'


def _stack(*xs):
  """Host arrays stay on the host (a checkpoint converted while restoring), others go to jnp."""
  return np.stack(xs) if all(isinstance(x, np.ndarray) for x in xs) else jnp.stack(xs)


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
      _block(k): jax.tree.map(_stack,
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


# ---- whole trees: params, or any state holding params-shaped trees (AdamW's moments) ----

def _rebuild(tree: Any, visit: Callable[[Tuple[str, ...], Dict[str, Any]], Dict[str, Any]],
             path: Tuple[str, ...] = ()) -> Any:
  """`tree` with every dict node replaced by visit(its key path, the node rebuilt below it);
  tuples and named tuples (optax states) are walked, anything else is a leaf."""
  if isinstance(tree, collections.abc.Mapping):
    return visit(path, {k: _rebuild(v, visit, path + (str(k),)) for k, v in tree.items()})
  if isinstance(tree, tuple) and hasattr(tree, '_fields'):
    return type(tree)(*[_rebuild(v, visit, path + (f,)) for f, v in zip(tree._fields, tree)])
  if isinstance(tree, (tuple, list)):
    return type(tree)(_rebuild(v, visit, path + (str(i),)) for i, v in enumerate(tree))
  return tree


def scanned_stages(params: Any) -> Dict[str, int]:
  """{'encoder/layers_2': period, ...}: the stages a params tree holds stacked (empty when it is
  per block). Reads only the tree's structure, so abstract shapes do."""
  found = {}

  def visit(path, node):
    if SCANNED in node and not any(p == SCANNED for p in path):
      found['/'.join(path)] = len(node[SCANNED])
    return node

  _rebuild(params, visit)
  return found


def _depth(stacked: Dict[str, Any]) -> int:
  first = jax.tree.leaves(stacked[_block(0)])[0]
  return first.shape[0] * len(stacked)


def to_per_block(tree: Any) -> Any:
  """Every stacked stage of `tree` (params, or a state holding params-shaped trees) split into
  its per-block params."""
  return _rebuild(tree, lambda path, node: unstack_blocks(
      node, _depth(node[SCANNED]), len(node[SCANNED])) if SCANNED in node else node)


def to_stacked(tree: Any, stages: Dict[str, int]) -> Any:
  """The per-block `tree` with the stages named in `stages` (as `scanned_stages` gives them)
  stacked; a state's params-shaped trees are matched by the end of their key paths."""
  suffixes = {tuple(name.split('/')): period for name, period in stages.items()}

  def visit(path, node):
    for suffix, period in suffixes.items():
      if path[len(path) - len(suffix):] == suffix and _block(0) in node:
        depth = sum(1 for k in node if k.startswith('blocks_'))
        return stack_blocks(node, depth, period)
    return node

  return _rebuild(tree, visit) if suffixes else tree


def relayout(tree: Any, stages: Dict[str, int]) -> Any:
  """`tree`, in either layout, with exactly the stages in `stages` stacked."""
  return to_stacked(to_per_block(tree), stages)
