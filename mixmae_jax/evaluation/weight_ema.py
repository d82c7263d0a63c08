"""An exponential moving average of the weights, kept in the optimizer state.

Chained last after the optimizer, `track_ema(decay)` sees each step's final updates and the
params they apply to, and keeps ema <- decay * ema + (1 - decay) * new params
(`optax.incremental_update`). Living in the optimizer state, the average is checkpointed, restored
and replicated with it at no extra cost in code. `ema_params(opt_state)` reads it back.
"""
from typing import Any, NamedTuple, Optional

import optax


class EmaState(NamedTuple):
  ema_params: Any


def track_ema(decay: float) -> optax.GradientTransformation:
  """Leaves updates unchanged; tracks the EMA of the params they produce (starts at the init)."""

  def init(params):
    return EmaState(ema_params=params)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('track_ema needs the params: call tx.update(grads, state, params).')
    new_params = optax.apply_updates(params, updates)
    return updates, EmaState(optax.incremental_update(new_params, state.ema_params, 1.0 - decay))

  return optax.GradientTransformation(init, update)


def ema_params(opt_state: Any) -> Optional[Any]:
  """The averaged params inside an optimizer state, or None if it tracks none."""
  found = optax.tree_utils.tree_get_all_with_path(opt_state, 'ema_params')
  return found[0][1] if found else None
