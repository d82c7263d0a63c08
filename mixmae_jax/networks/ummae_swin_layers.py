"""The building blocks of UM-MAE's Swin: position-MLP window attention, blocks, conv merging.

Unlike the MixMIM/standard Swin (`swin_layers.py`), a block has no relative position bias table:
a small MLP (`posmlp`: Conv1x1(2 -> hidden), ReLU, Conv1x1(hidden -> heads)) maps the
log-spaced coordinate differences sign(d) ln(1 + |d|), d = pos[key] - pos[query], of every
pair of tokens in a window to a bias per head. Coordinates are the tokens' own, on the full
grid, carried beside them ([1|B, H, W, 2], (row, col)): after UM-MAE's compaction neighbours on
the compact grid are not neighbours in the image, and the bias follows the image. Windows shift
by half a window in odd blocks (with the standard cross-region mask of -100, added like the
official code), never when one window covers the grid. Patch merging (LayerNorm(C) then a 2x2
stride-2 Conv(C -> 2C)) belongs to the first block of the next stage, which halves the
coordinates it carries. The blocks' own LayerNorms (`norm1`, `norm2`) have PyTorch's default eps
1e-5 (the official blocks are built without the model's norm layer); the patch embedding's and
merging's have 1e-6.

Parameter names follow the official `models_mae_swin.py`: `blocks_{k}/{downsample/{norm,proj},
norm1, attn/{qkv, proj, posmlp/{0,2}}, norm2, mlp/{fc1,fc2}}`.
"""
import math
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks.layers import (Dtype, DropPath, Mlp, attention_weights_and_values, dense,
                                        fused_attention, layer_norm)
from mixmae_jax.networks.swin_layers import shift_regions, window_partition, window_reverse

NORM_EPS = 1e-6  # patch embedding, merging, final norms
BLOCK_NORM_EPS = 1e-5  # norm1 and norm2 of every block
SHIFT_MASK_LOGIT = -100.0  # the official cross-region value, added to the logits


def conv_init(kernel_size: int, out_channels: int) -> nn.initializers.Initializer:
  """UM-MAE's Conv2d init: normal(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels."""
  return nn.initializers.normal(math.sqrt(2.0 / (kernel_size**2 * out_channels)))


class Conv1x1(nn.Module):
  """A 1x1 convolution on the last axis, stored as the official Conv2d ([1, 1, in, out])."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', conv_init(1, self.features), (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    y = jnp.einsum('...i,io->...o', x.astype(self.dtype), kernel[0, 0].astype(self.dtype))
    return y + bias.astype(y.dtype)


def strided_conv(features: int, size: int, dtype: Dtype, name: str) -> nn.Conv:
  """A `size` x `size`, stride `size` convolution (patch embedding, merging), official init."""
  return nn.Conv(features, (size, size), (size, size), padding='VALID', dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=conv_init(size, features), name=name)


def log_spaced(d: jax.Array) -> jax.Array:
  """sign(d) ln(1 + |d|): the position MLP's input."""
  return jnp.sign(d) * jnp.log1p(jnp.abs(d))


class PositionMLP(nn.Module):
  """Coordinate differences [..., N, N, 2] -> attention bias [..., heads, N, N] (float32)."""
  hidden: int
  num_heads: int

  @nn.compact
  def __call__(self, d: jax.Array) -> jax.Array:
    h = nn.relu(Conv1x1(self.hidden, name='0')(log_spaced(d)))
    return jnp.moveaxis(Conv1x1(self.num_heads, name='2')(h), -1, -3)


def window_differences(coords: jax.Array, window: int) -> jax.Array:
  """[1|B, H, W, 2] coordinates -> [1|B, nW, N, N, 2] key minus query inside every window."""
  windows = window_partition(coords, window)  # [1|B, nW, N, 2]
  return windows[..., None, :, :] - windows[..., :, None, :]


class PositionWindowAttention(nn.Module):
  """Window attention whose bias comes from the position MLP of each window's coordinates."""
  num_heads: int
  posmlp_dim: int
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py

  @nn.compact
  def __call__(self, x: jax.Array, differences: jax.Array,
               region_bias: Optional[np.ndarray] = None) -> jax.Array:
    """x: [B, nW, N, C]; differences: [1|B, nW, N, N, 2]; region_bias: [nW, N, N] or None."""
    b, nw, n, c = x.shape
    bias = PositionMLP(self.posmlp_dim, self.num_heads, name='posmlp')(differences)
    if region_bias is not None:
      bias = bias + jnp.asarray(region_bias)[:, None]  # [1|B, nW, heads, N, N]
    qkv_dense = dense(3 * c, dtype=self.dtype, name='qkv')
    proj = dense(c, dtype=self.dtype, name='proj')
    if self.attention == 'plain':
      q, k, v = jnp.moveaxis(qkv_dense(x).reshape(b, nw, n, 3, self.num_heads, -1), 3, 0)
      return proj(attention_weights_and_values(q, k, v, bias=bias).reshape(b, nw, n, c))
    # Windows join the heads axis so that one [1|B, nW * heads, N, N] bias serves them all.
    qkv = qkv_dense(x.swapaxes(1, 2)).reshape(b, n, nw, 3, self.num_heads, -1)
    q, k, v = (qkv[:, :, :, i].reshape(b, n, nw * self.num_heads, -1) for i in range(3))
    bias = bias.reshape(bias.shape[0], nw * self.num_heads, n, n).astype(jnp.float32)
    out = fused_attention(q, k, v, bias, self.attention)
    return proj(out.reshape(b, n, nw, c)).swapaxes(1, 2)


class ConvPatchMerge(nn.Module):
  """LayerNorm(C), then Conv 2x2 stride 2 (C -> 2C, with bias): [B, H, W, C] -> [B, H/2, W/2,
  2C]."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = layer_norm(epsilon=NORM_EPS, dtype=self.dtype, name='norm')(x)
    return strided_conv(2 * c, 2, self.dtype, 'proj')(x).astype(jnp.float32)


def block_window(window: int, grid: int, shifted: bool) -> Tuple[int, int]:
  """(window, shift) a block uses on a grid: the window is clipped to the grid, and a block whose
  window covers the grid never shifts (official SwinBlock)."""
  if grid <= window:
    return grid, 0
  return window, window // 2 if shifted else 0


def shift_bias(grid: int, window: int, shift: int) -> np.ndarray:
  """[nW, N, N] float32: 0 within a region of the shifted map, -100 across regions."""
  regions = shift_regions(grid, window, shift)
  return np.where(regions[:, :, None] == regions[:, None, :], 0.0,
                  SHIFT_MASK_LOGIT).astype(np.float32)


class UMSwinBlock(nn.Module):
  """[merge,] shifted-window attention with the position MLP, then the MLP; pre-norm."""
  num_heads: int
  window: int
  shifted: bool  # odd blocks of a stage
  mlp_ratio: float = 4.0
  posmlp_dim: int = 32
  drop_path: float = 0.0
  merge: bool = False  # the first block of stages 2.. owns the previous stage's patch merging
  dtype: Dtype = jnp.float32
  attention: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, coords: jax.Array,
               train: bool = False) -> Tuple[jax.Array, jax.Array]:
    """x: [B, H, W, C] float32; coords: [1|B, H, W, 2]. Returns both, merged if `merge`."""
    if self.merge:
      x = ConvPatchMerge(self.dtype, name='downsample')(x)
      coords = coords[:, ::2, ::2] / 2.0
    _, h, w, c = x.shape
    window, shift = block_window(self.window, h, self.shifted)
    drop = DropPath(self.drop_path)
    y = layer_norm(epsilon=BLOCK_NORM_EPS, dtype=self.dtype, name='norm1')(x)
    rolled = coords
    if shift:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
      rolled = jnp.roll(coords, (-shift, -shift), axis=(1, 2))
    region = shift_bias(h, window, shift) if shift else None
    y = PositionWindowAttention(self.num_heads, self.posmlp_dim, self.dtype, self.attention,
                                name='attn')(window_partition(y, window),
                                             window_differences(rolled, window), region)
    y = window_reverse(y, window, h, w)
    if shift:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = x + drop(y, deterministic=not train)
    y = layer_norm(epsilon=BLOCK_NORM_EPS, dtype=self.dtype, name='norm2')(x)
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    return x + drop(y, deterministic=not train), coords


class PatchEmbed(nn.Module):
  """Conv patch x patch, stride patch, then LayerNorm (eps 1e-6): [B, H, W, 3] -> [B, G, G, C].

  `normalize` applies the same LayerNorm to anything else (UM-MAE passes its secondary-mask
  token through it before putting it among the patch embeddings).
  """
  embed_dim: int
  patch_size: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.proj = strided_conv(self.embed_dim, self.patch_size, self.dtype, 'proj')
    self.norm = layer_norm(epsilon=NORM_EPS, dtype=self.dtype)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.normalize(self.proj(images.astype(self.dtype)))

  def normalize(self, x: jax.Array) -> jax.Array:
    return self.norm(x).astype(jnp.float32)


def grid_coordinates(side: int) -> np.ndarray:
  """[1, side, side, 2] float32 (row, col) of every token of a full grid."""
  rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing='ij')
  return np.stack([rows, cols], -1)[None].astype(np.float32)


def merge_tokens_flops(tokens: int, dim: int) -> float:
  """A 2x2 stride-2 conv merge on `tokens` input tokens (C -> 2C on tokens / 4)."""
  return 2.0 * (tokens // 4) * 4 * dim * 2 * dim


def posmlp_flops(windows: int, tokens_per_window: int, hidden: int, heads: int) -> float:
  """The position MLP on every pair of tokens of every window."""
  pairs = windows * tokens_per_window**2
  return 2.0 * pairs * (2 * hidden + hidden * heads)


def window_count(grid: int, window: int) -> int:
  return (grid // window)**2

