"""Moving an encoder to another input size or window size, as the official fine-tuning does.

Relative position bias tables ((2w-1)^2 x heads per block) and the absolute position embedding
are resized with PyTorch's bicubic interpolation (A = -0.75, half-pixel centres, clamped
borders), reimplemented here in numpy so converted and adapted checkpoints match the official
numbers. Each encoder module's `adapt` uses these to move its params (`networks.adapt_encoder`).
"""
import numpy as np

_A = -0.75  # PyTorch's bicubic coefficient


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """[n] fractional offsets -> [n, 4] weights of the neighbours at -1, 0, 1, 2."""
  def near(x):  # |x| <= 1
    return ((_A + 2) * x - (_A + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] matrix applying torch's bicubic resize (align_corners=False) along one axis."""
  if in_size == out_size:
    return np.eye(in_size)
  scale = in_size / out_size
  src = scale * (np.arange(out_size) + 0.5) - 0.5
  base = np.floor(src).astype(np.int64)
  weights = _cubic_weights(src - base)
  matrix = np.zeros((out_size, in_size))
  for k in range(4):
    idx = np.clip(base - 1 + k, 0, in_size - 1)
    np.add.at(matrix, (np.arange(out_size), idx), weights[:, k])
  return matrix


def bicubic_resize(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """[H, W, C] -> [out_h, out_w, C] float32, as torch.nn.functional.interpolate(bicubic)."""
  h, w = grid.shape[:2]
  x = np.asarray(grid, np.float64)
  out = np.einsum('oh,hwc->owc', bicubic_matrix(h, out_h), x)
  out = np.einsum('pw,owc->opc', bicubic_matrix(w, out_w), out)
  return out.astype(np.float32)


def resize_bias_table(table: np.ndarray, window: int) -> np.ndarray:
  """((2w'-1)^2, heads) -> ((2w-1)^2, heads) for a new window size w."""
  side = int(round(table.shape[0]**0.5))
  new = 2 * window - 1
  if side == new:
    return np.asarray(table, np.float32)
  grid = np.asarray(table).reshape(side, side, -1)
  return bicubic_resize(grid, new, new).reshape(new * new, -1)
