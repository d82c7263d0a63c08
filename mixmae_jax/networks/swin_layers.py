"""The building blocks of Swin stages: window attention, blocks, patch merging, scanned stages.

Tokens stay spatial, [B, H, W, C]. A *source map* ([H, W] or [B, H, W] slot ids, see
`objectives/mixing.py`) restricts attention to tokens of the same image inside mixed inputs.
Parameter names follow the official PyTorch modules (`blocks_{j}`, `attn/qkv`,
`attn/relative_position_bias_table`, `downsample/reduction`, `patch_embed/proj`).
"""
from typing import List, Optional, Sequence, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax.networks import block_scan
from mixmae_jax.networks.compute_options import REMAT_POLICIES
from mixmae_jax.networks.layers import (Dtype, DropPath, Mlp, attention_weights_and_values, dense,
                                        fused_attention, layer_norm, mask_to_bias, patch_conv,
                                        trunc_normal_init)



def window_partition(x: jax.Array, window: int) -> jax.Array:
  """[B, H, W, C] -> [B, nW, window * window, C], windows in raster order."""
  return einops.rearrange(x, 'b (h i) (w j) c -> b (h w) (i j) c', i=window, j=window)


def window_reverse(x: jax.Array, window: int, h: int, w: int) -> jax.Array:
  """[B, nW, window * window, C] -> [B, H, W, C]; inverse of `window_partition`."""
  return einops.rearrange(x, 'b (h w) (i j) c -> b (h i) (w j) c', h=h // window, i=window)


def relative_position_index(window: int) -> np.ndarray:
  """[N, N] index into a ((2w-1)^2, heads) bias table, Swin's layout (N = window^2)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij'))
  coords = coords.reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
  return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_regions(grid: int, window: int, shift: int) -> np.ndarray:
  """[nW, N] region id of every token of the cyclically shifted map (standard Swin).

  Tokens that wrapped around the border belong to other regions and may not attend across.
  """
  ids = np.zeros((grid, grid), np.int32)
  bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for r, rows in enumerate(bands):
    for c, cols in enumerate(bands):
      ids[rows, cols] = 3 * r + c
  windows = ids.reshape(grid // window, window, grid // window, window).transpose(0, 2, 1, 3)
  return windows.reshape(-1, window * window)


class WindowAttention(nn.Module):
  """Multi-head attention inside non-overlapping windows, with relative position bias."""
  window: int
  num_heads: int
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py

  @nn.compact
  def __call__(self, x: jax.Array, allowed: Optional[jax.Array] = None) -> jax.Array:
    """x: [B, nW, N, C]; allowed: bool broadcastable to [B, nW, heads, N, N]. -> [B, nW, N, C]."""
    b, nw, n, c = x.shape
    table = self.param('relative_position_bias_table', trunc_normal_init,
                       ((2 * self.window - 1)**2, self.num_heads), jnp.float32)
    bias = table[relative_position_index(self.window)].transpose(2, 0, 1)  # [heads, N, N]
    qkv_dense = dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name='qkv')
    proj = dense(c, dtype=self.dtype, name='proj')
    if self.attention == 'plain':
      q, k, v = jnp.moveaxis(qkv_dense(x).reshape(b, nw, n, 3, self.num_heads, -1), 3, 0)
      out = attention_weights_and_values(q, k, v, bias=bias, allowed=allowed)
      return proj(out.reshape(b, nw, n, c))
    # The windows join the heads axis, [B, N, nW * heads, hd], so that one [1, nW * heads, N, N]
    # bias holds the position bias and the same-source mask of every window: the mask is shared
    # by the batch, and cuDNN takes a bias broadcast over the batch but not over windows.
    qkv = qkv_dense(x.swapaxes(1, 2)).reshape(b, n, nw, 3, self.num_heads, -1)
    q, k, v = (qkv[:, :, :, i].reshape(b, n, nw * self.num_heads, -1) for i in range(3))
    if allowed is None:
      bias = jnp.broadcast_to(bias, (1, nw) + bias.shape)
    else:
      bias = mask_to_bias(allowed, bias)  # [1|B, nW, heads, N, N]
    bias = bias.reshape(bias.shape[0], nw * self.num_heads, n, n)
    out = fused_attention(q, k, v, bias, self.attention)
    return proj(out.reshape(b, n, nw, c)).swapaxes(1, 2)


class SwinBlock(nn.Module):
  """Window attention + MLP, pre-norm, with same-source masking (MixMIMBlock)."""
  num_heads: int
  window: int
  shift: int = 0
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py

  @nn.compact
  def __call__(self, x: jax.Array, source: Optional[jax.Array] = None, train: bool = False,
               drop_rate: Optional[jax.Array] = None) -> jax.Array:
    """x: [B, H, W, C] float32; source: [H, W] or [B, H, W] slot ids. Returns [B, H, W, C].

    `drop_rate`, a traced scalar, replaces the `drop_path` attribute (scanned stages pass it).
    """
    _, h, w, c = x.shape
    win, shift = self.window, self.shift
    drop = DropPath(self.drop_path)
    y = layer_norm(dtype=self.dtype, name='norm1')(x)
    if shift:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
    allowed = None
    if source is not None:
      src = source.reshape((-1, h, w, 1))
      if shift:
        src = jnp.roll(src, (-shift, -shift), axis=(1, 2))
      src = window_partition(src, win)[..., 0]  # [1|B, nW, N]
      allowed = (src[..., :, None] == src[..., None, :])[:, :, None]  # [1|B, nW, 1, N, N]
    if shift:
      regions = shift_regions(h, win, shift)
      same_region = jnp.asarray(regions[:, :, None] == regions[:, None, :])[None, :, None]
      allowed = same_region if allowed is None else allowed & same_region
    y = WindowAttention(win, self.num_heads, self.qkv_bias, self.dtype, self.attention,
                        name='attn')(window_partition(y, win), allowed)
    y = window_reverse(y, win, h, w)
    if shift:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = x + drop(y, deterministic=not train, rate=drop_rate)
    y = layer_norm(dtype=self.dtype, name='norm2')(x)
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    return x + drop(y, deterministic=not train, rate=drop_rate)


class PatchMerging(nn.Module):
  """2x2 neighbour concat (timm order), LayerNorm(4C), Linear(4C -> 2C, no bias)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H/2, W/2, 2C]."""
    c = x.shape[-1]
    # timm's order (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1): col outer.
    x = einops.rearrange(x, 'b (h i) (w j) c -> b h w (j i c)', i=2, j=2)
    x = layer_norm(dtype=self.dtype, name='norm')(x)
    return dense(2 * c, use_bias=False, dtype=self.dtype, name='reduction')(x).astype(jnp.float32)


def block_shifts(depth: int, window: int, grid: int, shifted_windows: bool) -> List[int]:
  """Each block's cyclic shift: standard Swin shifts every other block by half a window, never
  when one window covers the grid; MixMIM never shifts."""
  return [window // 2 if shifted_windows and j % 2 and grid > window else 0
          for j in range(depth)]


def scan_period(shifts: Sequence[int]) -> int:
  """Blocks per scanned step: 2 when blocks alternate between plain and shifted windows."""
  return 2 if any(shifts) else 1


def remat_block(cls: type, remat: str, static_argnums=()) -> type:
  """`cls` under activation checkpointing with the named policy, or `cls` for 'none'."""
  if remat == 'none':
    return cls
  # In a scan, CSE across iterations cannot undo the recomputation, so it need not be prevented.
  return nn.remat(cls, policy=REMAT_POLICIES[remat], static_argnums=static_argnums,
                  prevent_cse=not issubclass(cls, SwinBlockGroup))


class SwinStage(nn.Module):
  """`depth` blocks at one resolution, then patch merging unless it is the last stage."""
  depth: int
  num_heads: int
  window: int
  shifted_windows: bool
  mlp_ratio: float
  qkv_bias: bool
  drop_paths: Sequence[float]
  downsample: bool
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jax.Array, source: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """[B, G, G, C] -> [B, G, G, C], or [B, G/2, G/2, 2C] with downsampling."""
    shifts = block_shifts(self.depth, self.window, x.shape[1], self.shifted_windows)
    block = remat_block(SwinBlock, self.remat, static_argnums=(3,))  # (self, x, source, train)
    for j in range(self.depth):
      x = block(self.num_heads, self.window, shifts[j], self.mlp_ratio, self.qkv_bias,
                self.drop_paths[j], self.dtype, self.attention, name=f'blocks_{j}')(
                    x, source, train)
    if self.downsample:
      x = PatchMerging(self.dtype, name='downsample')(x)
    return x


class SwinBlockGroup(nn.Module):
  """`len(shifts)` consecutive blocks: one step of a scanned stage, carry in and out."""
  num_heads: int
  window: int
  shifts: Tuple[int, ...]
  mlp_ratio: float
  qkv_bias: bool
  dtype: Dtype
  attention: str
  train: bool

  @nn.compact
  def __call__(self, x: jax.Array, source: Optional[jax.Array],
               rates: Optional[jax.Array]) -> Tuple[jax.Array, None]:
    """x: [B, G, G, C]; rates: [len(shifts)] drop-path rates or None (no stochastic depth)."""
    for k, shift in enumerate(self.shifts):
      x = SwinBlock(self.num_heads, self.window, shift, self.mlp_ratio, self.qkv_bias, 0.0,
                    self.dtype, self.attention, name=f'blocks_{k}')(
                        x, source, self.train, None if rates is None else rates[k])
    return x, None


class ScannedSwinStage(SwinStage):
  """A `SwinStage` whose blocks run as one `nn.scan` loop; params in the scan's stacked layout.

  Build it through `block_scan.per_block_layout` (as `make_stages` does) so params are stored
  per block. Drop-path draws differ from the unrolled stage's (one key split per step instead of
  one per named block), so switching `scan_blocks` mid-run changes the random stream.
  """

  @nn.compact
  def __call__(self, x: jax.Array, source: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """[B, G, G, C] -> [B, G, G, C], or [B, G/2, G/2, 2C] with downsampling."""
    shifts = block_shifts(self.depth, self.window, x.shape[1], self.shifted_windows)
    period = scan_period(shifts)
    rates = np.asarray(self.drop_paths, np.float32).reshape(-1, period)
    stochastic = train and bool(rates.any())
    steps = nn.scan(remat_block(SwinBlockGroup, self.remat), variable_axes={'params': 0},
                    split_rngs={'params': True, 'drop_path': True},
                    in_axes=(nn.broadcast, 0), length=rates.shape[0])
    x, _ = steps(self.num_heads, self.window, tuple(shifts[:period]), self.mlp_ratio,
                 self.qkv_bias, self.dtype, self.attention, train, name=block_scan.SCANNED)(
                     x, source, jnp.asarray(rates) if stochastic else None)
    if self.downsample:
      x = PatchMerging(self.dtype, name='downsample')(x)
    return x


class PatchEmbed(nn.Module):
  """Conv patch x patch, stride patch, then LayerNorm. [B, H, W, 3] -> [B, H/p, W/p, C]."""
  embed_dim: int
  patch_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    # PyTorch's default Conv2d init: uniform(+-1/sqrt(fan_in)) for kernel and bias.
    uniform = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
    x = patch_conv(self.embed_dim, p, p * p * images.shape[-1], self.dtype, uniform)(
        images.astype(self.dtype))
    return layer_norm(dtype=self.dtype, name='norm')(x).astype(jnp.float32)
