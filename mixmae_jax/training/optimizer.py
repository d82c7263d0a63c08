"""AdamW with a weight-decay mask, and the per-step learning-rate schedules of the recipes:
warmup + cosine (every recipe but one) and warmup + steps (`lr_schedule='step'`, for a recipe
that decays its learning rate at fixed epochs)."""
from typing import Any, Callable, Collection, Sequence

import jax
import jax.numpy as jnp
import optax

from mixmae_jax.networks import block_scan

SCHEDULES = ('cosine', 'step')


def scaled_learning_rate(base_lr: float, batch_size: int) -> float:
  """The linear scaling rule: lr = base_lr * batch / 256."""
  return base_lr * batch_size / 256.0


def warmup_cosine_schedule(peak_lr: float, warmup_steps: int, total_steps: int,
                           min_lr: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 to peak_lr, then half-cycle cosine to min_lr at total_steps.

  Evaluated per optimizer step (the official codes update it every iteration).
  """
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=min_lr)


def warmup_step_schedule(peak_lr: float, warmup_steps: int, milestones: Sequence[int],
                         factor: float) -> optax.Schedule:
  """Linear warmup from 0 to peak_lr, then peak_lr times `factor` for every milestone step
  reached (counted from the start of the run, as PyTorch's MultiStepLR counts them)."""
  milestones = jnp.asarray(sorted(milestones) or [2**31 - 1], jnp.int32)

  def schedule(step):
    warm = peak_lr * step / max(warmup_steps, 1)
    steady = peak_lr * factor**jnp.sum(step >= milestones)
    return jnp.where(step < warmup_steps, warm, steady)

  return schedule


def learning_rate_schedule(config, plan) -> optax.Schedule:
  """The schedule a training config names (`lr_schedule`), on the run's plan of steps.

  'cosine': warmup, then half-cycle cosine to `min_lr`; 'step': warmup, then constant, times
  `lr_decay_factor` at each of `lr_decay_epochs`.
  """
  if config.get('lr_schedule', 'cosine') == 'step':
    milestones = [int(round(e * plan.steps_per_epoch)) for e in config.lr_decay_epochs]
    return warmup_step_schedule(plan.peak_lr, plan.warmup_steps, milestones,
                                config.lr_decay_factor)
  return warmup_cosine_schedule(plan.peak_lr, plan.warmup_steps, plan.total_steps,
                                config.min_lr)


def weight_decay_mask(params: Any, no_decay_names: Collection[str] = ()) -> Any:
  """True where AdamW decays: every >= 2-D weight except those under `no_decay_names`.

  1-D parameters (biases, LayerNorm scales; [blocks, D] in a stacked stage) are always
  exempt; which embeddings are exempt too is the objective's (`NO_WEIGHT_DECAY`) or, when
  fine-tuning, the encoder's to say.
  """
  exempt = frozenset(no_decay_names)

  def decays(path, leaf) -> bool:
    names = {getattr(k, 'key', None) for k in path}
    rank = leaf.ndim - (block_scan.SCANNED in names)  # a stacked stage's leading axis is blocks
    return rank > 1 and not (names & exempt)

  return jax.tree_util.tree_map_with_path(decays, params)


def clip_by_global_norm(max_norm: float,
                        global_norm: Callable[[Any], jax.Array] = optax.tree.norm
                        ) -> optax.GradientTransformation:
  """Scale updates down to `max_norm` when their global norm exceeds it (optax's rule, with the
  same empty state); `global_norm` is the layout's, so that sliced gradients are measured whole."""
  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    clipped = lambda u: jnp.where(norm < max_norm, u, u / norm.astype(u.dtype) * max_norm)  # noqa: E731
    return jax.tree.map(clipped, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def adamw(learning_rate: Callable[[Any], Any], *, weight_decay: float, b1: float, b2: float,
          grad_clip_norm: float = 0.0, no_decay_names: Collection[str] = (),
          global_norm: Callable[[Any], jax.Array] = optax.tree.norm
          ) -> optax.GradientTransformation:
  """AdamW (eps 1e-8) with decoupled weight decay on `weight_decay_mask`, optional global-norm
  clipping before it (measured with `global_norm`, see `clip_by_global_norm`)."""
  tx = optax.adamw(learning_rate, b1=b1, b2=b2, eps=1e-8, weight_decay=weight_decay,
                   mask=lambda params: weight_decay_mask(params, no_decay_names))
  if grad_clip_norm > 0:
    tx = optax.chain(clip_by_global_norm(grad_clip_norm, global_norm), tx)
  return tx
