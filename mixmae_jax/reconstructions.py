"""Pictures of what the model reconstructs: original | mixed input | reconstruction.

One row per image; the two images of each mixed pair sit on consecutive rows. Predictions of a
norm-pix model are mapped back to pixels with each original patch's mean and variance.
"""
import io
from typing import Sequence

import numpy as np
from etils import epath
from PIL import Image

from mixmae_jax.patches import denormalize_patches, patchify, unpatchify
from mixmae_jax.pixels import to_uint8


def reconstruction_panels(images: np.ndarray, pred: np.ndarray, mask: np.ndarray, patch: int,
                          norm_pix: bool):
  """(mixed inputs, reconstructions), both normalized [B, H, W, 3] like `images`.

  images: [B, H, W, 3]; pred: [B, L, patch*patch*3]; mask: [g, g] (1 = partner B-1-i shown).
  """
  images = np.asarray(images, np.float32)
  partner = images[::-1]
  unit = np.kron(np.asarray(mask), np.ones((patch, patch)))[None, :, :, None]
  mixed = np.where(unit == 1, partner, images)
  pred = np.asarray(pred, np.float32)
  if norm_pix:
    pred = np.asarray(denormalize_patches(pred, patchify(images, patch)))
  recon = np.asarray(unpatchify(pred, patch, images.shape[-1]))
  return mixed, recon


def pair_order(batch_size: int) -> list:
  """Row order that puts each image next to its partner: 0, B-1, 1, B-2, ..."""
  order = []
  for i in range((batch_size + 1) // 2):
    order += [i] if i == batch_size - 1 - i else [i, batch_size - 1 - i]
  return order


def reconstruction_grid(images: np.ndarray, pred: np.ndarray, mask: np.ndarray, patch: int,
                        norm_pix: bool, mean: Sequence[float], std: Sequence[float],
                        gap: int = 4) -> np.ndarray:
  """uint8 picture: rows are images (partners adjacent); columns original | mixed | recon."""
  images = np.asarray(images, np.float32)
  mixed, recon = reconstruction_panels(images, pred, mask, patch, norm_pix)
  order = pair_order(len(images))
  columns = [to_uint8(x[order], mean, std) for x in (images, mixed, recon)]
  b, h, w, c = columns[0].shape
  canvas = np.full((b * h + (b - 1) * gap, 3 * w + 2 * gap, c), 255, np.uint8)
  for col, panel in enumerate(columns):
    for row in range(b):
      y, x = row * (h + gap), col * (w + gap)
      canvas[y:y + h, x:x + w] = panel[row]
  return canvas


def save_reconstruction_png(path: str, *args, **kwargs) -> None:
  """Write `reconstruction_grid(*args, **kwargs)` as a PNG (local or remote path)."""
  buffer = io.BytesIO()
  Image.fromarray(reconstruction_grid(*args, **kwargs)).save(buffer, format='PNG')
  epath.Path(path).write_bytes(buffer.getvalue())
