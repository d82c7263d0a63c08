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


def geometric_offsets(src_side: int, dst_side: int) -> np.ndarray:
  """SimMIM's source offsets for a table of `src_side` relative positions stretched to
  `dst_side`: 0 in the middle, steps growing geometrically by a ratio q found by bisection so
  the outermost offset reaches about dst_side // 2."""
  half = src_side // 2
  left, right = 1.01, 1.5
  while right - left > 1e-6:
    q = (left + right) / 2.0
    if (1.0 - q**half) / (1.0 - q) > dst_side // 2:
      right = q
    else:
      left = q
  steps = np.cumsum([1.0] + [q**(i + 1) for i in range(half - 1)])
  return np.concatenate([-steps[::-1], [0.0], steps])


def geometric_resize_bias_table(table: np.ndarray, window: int) -> np.ndarray:
  """((2w'-1)^2, heads) -> ((2w-1)^2, heads) as SimMIM's fine-tuning remaps a pretrained Swin.

  Per head, an interpolating bicubic spline through the table at geometric offsets
  (`geometric_offsets`), read at the integer offsets -(w-1)..(w-1). SimMIM used scipy's
  `interp2d(kind='cubic')`, removed from SciPy; `RectBivariateSpline` (kx = ky = 3, s = 0)
  fits the same FITPACK spline on a regular grid. Tables of fewer than 4 offsets per side (toy
  windows of 1 or 2, which SimMIM's code cannot resize) take the highest degree they allow.
  """
  from scipy import interpolate  # pylint: disable=import-outside-toplevel
  side = int(round(table.shape[0]**0.5))
  new = 2 * window - 1
  if side == new:
    return np.asarray(table, np.float32)
  source = geometric_offsets(side, new)
  target = np.arange(-(new // 2), new // 2 + 0.1, 1.0)
  grid = np.asarray(table, np.float64).reshape(side, side, -1)
  if side < 2:
    return resize_bias_table(table, window)
  degree = min(3, side - 1)
  heads = [interpolate.RectBivariateSpline(source, source, grid[..., h], kx=degree, ky=degree,
                                           s=0)(target, target) for h in range(grid.shape[-1])]
  return np.stack(heads, -1).reshape(new * new, -1).astype(np.float32)
