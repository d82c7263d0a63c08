"""The pure per-device step of supervised training (fine-tuning and linear probing).

`train_step(state, batch, base_rng) -> (state, metrics)` with batch {'image': uint8 [B, H, W, 3],
'label': int32 [B]}: normalize on the device, random erasing, Mixup/CutMix with smoothed targets,
soft-target cross-entropy, gradients averaged over the data-parallel axis. It has the same shape
as the pretraining step (`training/train_step.py`) and runs in the same wrapper: every
draw derives from (seed, step, device, micro-batch, stream).

The model is a `logits_fn(params, images, train, rngs) -> logits [B, K]`; `trainable` names the
one top-level entry of `params` that is optimized (None: all of them), so a linear probe
differentiates its head only and never backpropagates through the frozen encoder.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from mixmae_jax.data import pixels
from mixmae_jax.evaluation import mixup, random_erasing
from mixmae_jax.evaluation.mixup import MixupSettings
from mixmae_jax.training.train_step import (AXIS, TrainState, apply_gradients, device_key,
                                            mean_loss_and_grads, step_rngs)

# Streams of the on-device augmentation, folded into the per-device key beside the model's
# streams (train_step.RNG_STREAMS uses 0-2).
_MIXUP, _ERASING = 10, 11

LogitsFn = Callable[[Any, jax.Array, bool, Dict[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """Augmentation done on the devices: random erasing, then Mixup/CutMix and label smoothing."""
  mixup: MixupSettings = MixupSettings()
  erase_prob: float = 0.25


def augment_batch(key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int,
                  augment: DeviceAugment) -> Tuple[jax.Array, jax.Array]:
  """Normalized images [B, H, W, 3], int labels [B] -> (images, soft targets [B, K])."""
  images = random_erasing.random_erase(jax.random.fold_in(key, _ERASING), images,
                                       augment.erase_prob)
  targets = mixup.smoothed_targets(labels, num_classes, augment.mixup.label_smoothing)
  if augment.mixup.active:
    images, targets = mixup.mix_batch(jax.random.fold_in(key, _MIXUP), images, targets,
                                      augment.mixup)
  return images, targets


def make_classification_step(logits_fn: LogitsFn, tx: optax.GradientTransformation,
                             learning_rate: Callable[[Any], Any], *, num_classes: int,
                             pixel_mean: Sequence[float], pixel_std: Sequence[float],
                             augment: DeviceAugment = DeviceAugment(),
                             grad_accum_steps: int = 1, trainable: Optional[str] = None,
                             axis_name: str = AXIS) -> Callable:
  """Build `train_step(state, batch, base_rng) -> (state, metrics)` for one device."""

  def train_step(state: TrainState, batch: Dict[str, jax.Array],
                 base_rng: jax.Array) -> Tuple[TrainState, Dict[str, jax.Array]]:
    key = device_key(base_rng, state.step, axis_name)
    images = pixels.normalize(batch['image'], pixel_mean, pixel_std)
    optimized = state.params if trainable is None else state.params[trainable]

    def micro_loss_and_grads(optimized, inputs, key):
      images, targets = augment_batch(key, *inputs, num_classes, augment)

      def loss_fn(optimized):
        full = optimized if trainable is None else {**state.params, trainable: optimized}
        logits = logits_fn(full, images, True, step_rngs(key))
        loss = jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))
        return loss, {}

      return jax.value_and_grad(loss_fn, has_aux=True)(optimized)

    (loss, _), grads = mean_loss_and_grads(micro_loss_and_grads, optimized,
                                           (images, batch['label']), key, grad_accum_steps)
    loss, grads = jax.lax.pmean((loss, grads), axis_name)
    optimized, opt_state, metrics = apply_gradients(tx, optimized, state.opt_state, loss, grads,
                                                    learning_rate(state.step))
    params = optimized if trainable is None else {**state.params, trainable: optimized}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
