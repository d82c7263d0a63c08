"""Mixup, CutMix and label smoothing on the device, batch-wise as timm's `Mixup(mode='batch')`.

One draw per (device, micro-batch): with probability `prob` the batch is mixed; CutMix is chosen
over Mixup with probability `switch_prob` when both are on; lambda ~ Beta(alpha, alpha). Image i
is mixed with image B-1-i (the batch flipped). CutMix pastes a box of area about (1 - lambda)
from the partner and then corrects lambda to the exact pasted area. Targets are one-hot labels
smoothed first (`optax.smooth_labels`) and then mixed with the same lambda, so every row sums to 1
and the partner's share equals the share of its pixels.
"""
import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class MixupSettings:
  """The recipe's mixing knobs; `active` is False when neither Mixup nor CutMix is on."""
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  prob: float = 1.0
  switch_prob: float = 0.5
  label_smoothing: float = 0.1

  @property
  def active(self) -> bool:
    return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def smoothed_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """int [B] -> float32 [B, classes]: 1 - smoothing + smoothing / K on the label, smoothing / K
  elsewhere."""
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32), smoothing)


def cutmix_box(key: jax.Array, lam: jax.Array, height: int,
               width: int) -> Tuple[jax.Array, jax.Array]:
  """A box covering about (1 - lam) of the image, clipped at the borders.

  Returns (inside: bool [H, W], corrected lam = 1 - box area / image area), as timm's
  `rand_bbox` (box sides int(side * sqrt(1 - lam)), centre uniform over the image).
  """
  cut = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * cut).astype(jnp.int32)
  cut_w = jnp.floor(width * cut).astype(jnp.int32)
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  area = (bottom - top) * (right - left)
  return inside, 1.0 - area.astype(jnp.float32) / (height * width)


def mix_batch(key: jax.Array, images: jax.Array, targets: jax.Array,
              settings: MixupSettings) -> Tuple[jax.Array, jax.Array]:
  """Mix a batch with its flip. images [B, H, W, C] float; targets [B, K] (smoothed one-hot).

  Returns (mixed images, mixed targets); unchanged when the draw says not to mix.
  """
  apply_key, switch_key, lam_key, box_key = jax.random.split(key, 4)
  _, height, width, _ = images.shape
  partner_images, partner_targets = images[::-1], targets[::-1]
  s = settings
  if s.mixup_alpha > 0 and s.cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(switch_key) < s.switch_prob
  else:
    use_cutmix = jnp.asarray(s.cutmix_alpha > 0)
  alpha = jnp.where(use_cutmix, s.cutmix_alpha, s.mixup_alpha)
  lam = jax.random.beta(lam_key, alpha, alpha)
  inside, box_lam = cutmix_box(box_key, lam, height, width)
  blended = images * lam + partner_images * (1.0 - lam)
  pasted = jnp.where(inside[None, :, :, None], partner_images, images)
  mixed = jnp.where(use_cutmix, pasted, blended)
  lam = jnp.where(use_cutmix, box_lam, lam)
  apply = jax.random.uniform(apply_key) < s.prob
  lam = jnp.where(apply, lam, 1.0)
  mixed = jnp.where(apply, mixed, images)
  return mixed, targets * lam + partner_targets * (1.0 - lam)
