"""Fixed 2-D sine-cosine position embeddings (the MAE formula).

The first half of the channels encodes the column and the second half the row: MAE builds its
grid with `meshgrid(w, h)`, so its "grid[0]" holds column indices. Checkpoints of the official
code carry these tables as frozen buffers; we recompute them, so the layout must match exactly.
"""
import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """[M] positions -> [M, dim] embedding: sin of all frequencies, then cos."""
  if dim % 2:
    raise ValueError(f'sin-cos embedding needs an even dim, got {dim}.')
  omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
  omega = 1.0 / 10000**omega
  out = np.einsum('m,d->md', positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """[grid_h * grid_w, dim] float32, raster order (row-major), columns in the first half."""
  if dim % 4:
    raise ValueError(f'2-D sin-cos embedding needs dim divisible by 4, got {dim}.')
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing='ij')
  emb = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
  return emb.astype(np.float32)
