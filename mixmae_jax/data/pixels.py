"""Pixel values in and out of the model's normalized space.

The input pipeline hands over uint8 pixels (a quarter of the bytes of float32 to move to the
devices); the step normalizes them on the device with the dataset's mean and std.
"""
from typing import Sequence

import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images, mean: Sequence[float], std: Sequence[float]):
  """uint8 (or float 0-255) pixels [..., 3] -> float32 (x / 255 - mean) / std."""
  scale = jnp.asarray([1.0 / (255.0 * s) for s in std], jnp.float32)
  offset = jnp.asarray([-m / s for m, s in zip(mean, std)], jnp.float32)
  return jnp.asarray(images, jnp.float32) * scale + offset


def to_uint8(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Normalized float images [..., 3] -> uint8 pixels (clipped), for pictures."""
  x = np.asarray(images, np.float32) * np.asarray(std) + np.asarray(mean)
  return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
