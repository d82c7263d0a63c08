"""Reconstruction pictures: the same images, the same masks, at every picture step.

What the columns are is the objective's to say (its `picture_columns`: the original, the input
the encoder saw, the reconstruction, ...); this module runs the model on fixed images with a
fixed 'mask' key, lays the columns out under their titles and writes
`WORKDIR/reconstructions/step_*.png` and a TensorBoard image (`reconstructions`).

With norm-pix targets the model predicts each patch's pixels normalized by that patch's own mean
and variance; a picture maps them back with the *original* patch's statistics (the convention of
the masked-autoencoder papers' pictures), so every patch gets its true average colour and
contrast from the target. Even an untrained model's reconstructions look plausible: judge the
detail within patches, not the colours.
"""
import io
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image, ImageDraw

from mixmae_jax.data import pixels

PICTURE_DIR = 'reconstructions'

TITLE_HEIGHT = 14


def picture_count(requested: int, multiple: int) -> int:
  """`requested` images rounded up to the objective's batch multiple (at least one group)."""
  return max(multiple, -(-requested // multiple) * multiple)


def grid(columns: Sequence[Tuple[str, np.ndarray]], order: Sequence[int],
         mean: Sequence[float], std: Sequence[float], gap: int = 4) -> np.ndarray:
  """uint8 picture: a title row, then one row per image in `order`, one column per panel.

  columns: (title, normalized images [B, H, W, 3]) pairs.
  """
  order = list(order)
  panels = [pixels.to_uint8(np.asarray(x)[order], mean, std) for _, x in columns]
  b, h, w, c = panels[0].shape
  top = TITLE_HEIGHT
  canvas = np.full((top + b * h + (b - 1) * gap, len(panels) * (w + gap) - gap, c), 255, np.uint8)
  for col, panel in enumerate(panels):
    for row in range(b):
      y, x = top + row * (h + gap), col * (w + gap)
      canvas[y:y + h, x:x + w] = panel[row]
  picture = Image.fromarray(canvas)
  draw = ImageDraw.Draw(picture)
  for col, (title, _) in enumerate(columns):
    draw.text((col * (w + gap) + 2, 1), title[:max(1, w // 6)], fill=(0, 0, 0))
  return np.asarray(picture)


def picture_path(workdir: str, step: int) -> str:
  """WORKDIR/reconstructions/step_NNNNNNN.png."""
  return str(epath.Path(workdir) / PICTURE_DIR / f'step_{step:07d}.png')


def save_png(path: str, picture: np.ndarray) -> None:
  """Write a uint8 picture as a PNG (local or remote path)."""
  buffer = io.BytesIO()
  Image.fromarray(picture).save(buffer, format='PNG')
  epath.Path(path).write_bytes(buffer.getvalue())


class Pictures:
  """Draws reconstructions of the same images with the same masks at every picture step.

  `images`: normalized [N, H, W, 3] (N a multiple of the objective's batch multiple);
  `objective`: the objective module (its `picture_columns`); `arch`: its config.
  """

  def __init__(self, model, objective, arch, images: np.ndarray, seed: int,
               mean: Sequence[float], std: Sequence[float]):
    self.objective, self.arch = objective, arch
    self.images, self.mean, self.std = np.asarray(images, np.float32), mean, std
    rngs = {'mask': jax.random.PRNGKey(seed + 1)}
    self._apply = jax.jit(lambda params, images: model.apply({'params': params}, images,
                                                             rngs=rngs))

  def picture(self, params) -> np.ndarray:
    """The picture of the current params (one copy: `layout.single_copy`)."""
    out = self._apply(params, jnp.asarray(self.images))
    out = jax.tree.map(np.asarray, {k: v for k, v in out.items() if k != 'metrics'})
    order, columns = self.objective.picture_columns(self.images, out, self.arch)
    return grid(columns, order, self.mean, self.std)

  def draw(self, params, step: int, workdir: str, primary: bool,
           metric_log=None) -> Optional[str]:
    """Write the picture of `step` (primary process) as a PNG and, given a `MetricLog`, to
    TensorBoard; returns the PNG's path. `params`: one copy, as `layout.single_copy` gives."""
    picture = self.picture(params)
    if not primary:
      return None
    path = picture_path(workdir, step)
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_png(path, picture)
    if metric_log is not None:
      metric_log.image(step, 'reconstructions', picture)
    return path
