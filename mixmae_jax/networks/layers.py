"""Transformer pieces shared by the encoders (Swin, ViT) and the ViT decoder.

Initializers and epsilons follow the official PyTorch models (timm layers): Linear weights
xavier-uniform with zero bias, LayerNorm eps 1e-5, exact (erf) GELU. Dtype policy: parameters are
float32; matmuls run in the module's `dtype`; layer-norm statistics, attention logits and softmax
run in float32; the residual stream stays float32, as under PyTorch autocast.

Attention has two implementations that compute the same function: the plain one
(`attention_weights_and_values`, the reference) and the fused one (`fused_attention`, through
`jax.nn.dot_product_attention`: cuDNN's flash attention on NVIDIA GPUs where it applies, XLA
elsewhere), picked by `compute_options.ComputeOptions.attention`.

A caller may change what a block's attention does without changing its parameters through an
`AttentionModifier`: a mask of allowed pairs, and/or top-k key selection (each query keeps only
its k highest-scoring keys), which needs the scores and so runs outside the fused kernel.
"""
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

dense = functools.partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
                          bias_init=nn.initializers.zeros, param_dtype=jnp.float32)
layer_norm = functools.partial(nn.LayerNorm, epsilon=1e-5, param_dtype=jnp.float32)
trunc_normal_init = nn.initializers.truncated_normal(stddev=0.02)

# Added to the logits a query may not attend to. Finite, so a fully masked row would give a
# uniform (not NaN) distribution; rows are never fully masked because a token sees itself.
MASKED_LOGIT = -1e9


def attention_logits(q: jax.Array, k: jax.Array) -> jax.Array:
  """[..., N, heads, d] x2 -> float32 scaled scores [..., heads, N, N]."""
  scale = q.shape[-1]**-0.5
  return jnp.einsum('...qhd,...khd->...hqk', q * jnp.asarray(scale, q.dtype), k,
                    preferred_element_type=jnp.float32)


def attention_weights_and_values(q: jax.Array, k: jax.Array, v: jax.Array,
                                 bias: Optional[jax.Array] = None,
                                 allowed: Optional[jax.Array] = None) -> jax.Array:
  """Scaled dot-product attention with float32 logits and softmax.

  Args:
    q, k, v: [..., N, heads, head_dim] in the compute dtype.
    bias: broadcastable to [..., heads, N, N] (e.g. relative position bias), float32.
    allowed: bool, broadcastable to [..., heads, N, N]; False entries are masked out.
  Returns:
    [..., N, heads, head_dim] in v's dtype.
  """
  logits = attention_logits(q, k)
  if bias is not None:
    logits = logits + bias
  if allowed is not None:
    logits = jnp.where(allowed, logits, MASKED_LOGIT)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('...hqk,...khd->...qhd', probs, v)


TOP_K_METHODS = ('threshold', 'top_k')


@flax.struct.dataclass
class AttentionModifier:
  """How a caller changes one block's attention; the block's parameters stay the same.

  allowed: bool, broadcastable to [B, heads, N, N], or None: the pairs a query may attend to.
  top_k: each query keeps only its `top_k` highest-scoring (allowed) keys; 0 keeps all.
  top_k_method: 'threshold' (find each query's k-th largest score exactly by bisection, mask the
    scores below it, then dense attention; keys tied with the k-th score are all kept) or
    'top_k' (`lax.top_k` indices, softmax over the k scores, values gathered).
  groups: int [B, N] token labels, or None. With top-k, the block reports
    `top_k_precision`: the share of kept keys in the query's own group.
  qk_codes: float [G, C] or None: a vector per group added to the inputs of the query and key
    projections only (not the values'), so the scores can use a token's group without the
    block's output carrying it. Needs `groups`.
  keep_logits: the block also reports `logits`, its scores averaged over heads, float32
    [B, N, N] (before top-k selection), so a loss can train what top-k ranks.
  """
  allowed: Optional[jax.Array] = None
  groups: Optional[jax.Array] = None
  top_k: int = flax.struct.field(pytree_node=False, default=0)
  top_k_method: str = flax.struct.field(pytree_node=False, default='threshold')
  qk_codes: Optional[jax.Array] = None
  keep_logits: bool = flax.struct.field(pytree_node=False, default=False)


def ordered_bits(x: jax.Array) -> jax.Array:
  """float32 -> uint32 with the same order (IEEE bits: negatives inverted, sign bit set on the
  rest), so comparisons of the integers are comparisons of the floats."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def top_k_threshold_mask(logits: jax.Array, top_k: int) -> jax.Array:
  """bool [..., Q, K]: the scores at or above each query's `top_k`-th largest (no gradient).

  The k-th largest is found exactly, bit by bit from the top of its ordered integer
  (`ordered_bits`): 32 rounds of compare-and-count over the row, which vectorise and fuse where
  a sort or `lax.top_k` does not (on a CPU it is about 7x faster than `lax.top_k` at ViT-B's
  sizes; `measurement/topk_attention_benchmark.py`).
  """
  keys = ordered_bits(jax.lax.stop_gradient(logits))

  def next_bit(i, kth):
    candidate = kth | jnp.left_shift(jnp.uint32(1), (31 - i).astype(jnp.uint32))
    # counting in float32 is exact (rows are far shorter than 2^24) and vectorises better
    enough = jnp.sum(jnp.where(keys >= candidate, 1.0, 0.0), axis=-1, keepdims=True) >= top_k
    return jnp.where(enough, candidate, kth)

  kth = jax.lax.fori_loop(0, 32, next_bit, jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32))
  return keys >= kth


def top_k_attention(q: jax.Array, k: jax.Array, v: jax.Array, top_k: int,
                    method: str = 'threshold', allowed: Optional[jax.Array] = None,
                    groups: Optional[jax.Array] = None,
                    keep_logits: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Attention in which each query keeps only its `top_k` highest-scoring keys.

  Args:
    q, k, v: [B, N, heads, head_dim] in the compute dtype.
    top_k: keys kept per query (1 <= top_k <= N).
    method: 'threshold' or 'top_k' (see `AttentionModifier`); the same function up to ties.
    allowed: bool broadcastable to [B, heads, N, N]; disallowed keys are never kept while
      `top_k` allowed ones remain.
    groups: int [B, N] or None; gives the `top_k_precision` statistic.
    keep_logits: also return the head-averaged scores as `logits` [B, N, N].
  Returns:
    ([B, N, heads, head_dim] in v's dtype, statistics: `top_k_precision` with groups, `logits`
    with keep_logits).
  """
  logits = attention_logits(q, k)  # [B, heads, N, N]
  stats = {'logits': jnp.mean(logits, axis=1)} if keep_logits else {}
  if allowed is not None:
    logits = jnp.where(allowed, logits, MASKED_LOGIT)
  if method == 'threshold':
    keep = top_k_threshold_mask(logits, top_k)
    probs = jax.nn.softmax(jnp.where(keep, logits, MASKED_LOGIT), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
  elif method == 'top_k':
    scores, index = jax.lax.top_k(logits, top_k)  # [B, heads, N, top_k]
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    values = jnp.take_along_axis(jnp.moveaxis(v, 2, 1)[:, :, None], index[..., None], axis=3)
    out = jnp.einsum('bhqk,bhqkd->bqhd', probs, values)  # values: [B, heads, N, top_k, d]
  else:
    raise ValueError(f'top_k_method={method!r}: use one of {", ".join(TOP_K_METHODS)}.')
  if groups is None:
    return out, stats
  query_groups = groups[:, None, :, None]  # [B, 1, N, 1]
  if method == 'threshold':
    same = keep & (query_groups == groups[:, None, None, :])
    precision = same.sum(-1) / keep.sum(-1)
  else:
    key_groups = jax.vmap(lambda g, i: g[i])(groups, index)  # [B, heads, N, top_k]
    precision = jnp.mean(key_groups == query_groups, axis=-1)
  return out, {**stats, 'top_k_precision': jnp.mean(precision.astype(jnp.float32))}


def mask_to_bias(allowed: jax.Array, bias: Optional[jax.Array] = None) -> jax.Array:
  """Folds a bool mask into an additive float32 bias: bias where allowed, MASKED_LOGIT elsewhere.

  The result has the broadcast shape of `allowed` and `bias`.
  """
  bias = jnp.zeros((), jnp.float32) if bias is None else bias.astype(jnp.float32)
  return jnp.where(allowed, bias, MASKED_LOGIT)


def _on_nvidia_gpu() -> bool:
  """An NVIDIA GPU of compute capability 8.0 (Ampere) or later: where cuDNN flash attention runs."""
  device = jax.devices()[0]
  if device.platform != 'gpu':
    return False
  version = getattr(getattr(device, 'client', None), 'platform_version', '')
  capability = getattr(device, 'compute_capability', '0')
  return 'rocm' not in str(version).lower() and float(capability) >= 8.0


def cudnn_attention_applies(q: jax.Array, bias: Optional[jax.Array]) -> bool:
  """Whether cuDNN's fused attention takes these inputs, by JAX's documented limits.

  q: [B, T, heads, head_dim]; bias: [1|B, heads, T, S] or None. It needs an NVIDIA GPU, half
  precision, a head dim that is a multiple of 8 up to 128 and, when a bias is trained, even
  sequence lengths (Swin's 7x7 windows, 49 tokens, fall back to XLA).
  """
  if not _on_nvidia_gpu():
    return False
  head_dim, length = q.shape[-1], q.shape[1]
  if q.dtype not in (jnp.bfloat16, jnp.float16) or head_dim % 8 or head_dim > 128:
    return False
  return bias is None or (length % 2 == 0 and bias.shape[0] in (1, q.shape[0]))


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: Optional[jax.Array] = None,
                    implementation: str = 'auto') -> jax.Array:
  """`jax.nn.dot_product_attention` with float32 logits and softmax, masks folded into `bias`.

  Args:
    q, k, v: [B, T, heads, head_dim] in the compute dtype.
    bias: float32 broadcastable to [B, heads, T, T], masked pairs at MASKED_LOGIT, or None.
    implementation: 'auto' (cuDNN where `cudnn_attention_applies`, else XLA) or 'xla'.
  Returns:
    [B, T, heads, head_dim] in v's dtype.
  """
  if implementation == 'auto' and cudnn_attention_applies(q, bias):
    try:
      cudnn_bias = None if bias is None else bias.astype(q.dtype)  # cuDNN adds it in q's dtype
      return jax.nn.dot_product_attention(q, k, v, bias=cudnn_bias, implementation='cudnn')
    except NotImplementedError:  # a limit JAX checks that we do not know about: use XLA
      pass
  return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation='xla')


def patch_conv(features: int, patch: int, fan_in: int, dtype: Dtype,
               kernel_init: Callable, name: str = 'proj') -> nn.Conv:
  """A patch x patch, stride-patch convolution (a patch embedding) with PyTorch's default
  Conv2d bias init, uniform(+-1/sqrt(fan_in)); float32 params."""
  bound = fan_in**-0.5
  bias_init = lambda key, shape, dtype: jax.random.uniform(  # noqa: E731
      key, shape, dtype, -bound, bound)
  return nn.Conv(features, (patch, patch), (patch, patch), padding='VALID', dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, bias_init=bias_init,
                 name=name)


class Mlp(nn.Module):
  """fc1 -> GELU -> fc2 (timm `Mlp`)."""
  hidden_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = x.shape[-1]
    x = dense(self.hidden_dim, dtype=self.dtype, name='fc1')(x)
    x = nn.gelu(x, approximate=False)
    return dense(out_dim, dtype=self.dtype, name='fc2')(x)


class DropPath(nn.Module):
  """Stochastic depth: drop the whole residual branch of a sample with probability `rate`.

  A scanned stage passes each block's rate as a traced `rate` argument instead.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool,
               rate: Optional[jax.Array] = None) -> jax.Array:
    if deterministic or (rate is None and self.rate == 0.0):
      return x
    keep = 1.0 - (self.rate if rate is None else rate)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('drop_path'), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def _query_key_shift(qkv_layer: nn.Module, codes: jax.Array, groups: jax.Array,
                     dim: int) -> jax.Array:
  """[B, N, 3 C]: what adding codes[groups] to the projection's input adds to q and k (the
  projection is linear, so the S codes are projected once, not every token), zero for v."""
  if groups is None:
    raise ValueError('AttentionModifier.qk_codes needs groups: the code of each token.')
  # the kernel alone (no bias): one rounding in low precision, where qkv(codes) - qkv(0) had two
  kernel = qkv_layer.variables['params']['kernel']
  projected = jnp.asarray(codes, qkv_layer.dtype) @ jnp.asarray(kernel, qkv_layer.dtype)
  projected = projected.at[:, 2 * dim:].set(0)  # [G, 3 C]
  return projected[groups]


class Attention(nn.Module):
  """Global multi-head self-attention (timm `Attention`: fused qkv, proj)."""
  num_heads: int
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py

  @nn.compact
  def __call__(self, x: jax.Array, allowed: Optional[jax.Array] = None,
               modifier: Optional[AttentionModifier] = None):
    """x: [B, N, C]; allowed: bool broadcastable to [B, heads, N, N]. Returns [B, N, C].

    With a `modifier`, returns ([B, N, C], statistics dict) (see `AttentionModifier`).
    """
    batch, length, dim = x.shape
    qkv_layer = dense(3 * dim, use_bias=self.qkv_bias, dtype=self.dtype, name='qkv')
    qkv = qkv_layer(x)
    if modifier is not None and modifier.qk_codes is not None:
      qkv = qkv + _query_key_shift(qkv_layer, modifier.qk_codes, modifier.groups, dim)
    q, k, v = jnp.moveaxis(qkv.reshape(batch, length, 3, self.num_heads, -1), 2, 0)
    stats = {}
    if modifier is not None and modifier.allowed is not None:
      allowed = modifier.allowed if allowed is None else allowed & modifier.allowed
    if modifier is not None and modifier.top_k:
      out, stats = top_k_attention(q, k, v, modifier.top_k, modifier.top_k_method, allowed,
                                   modifier.groups, modifier.keep_logits)
    elif modifier is not None and modifier.keep_logits:
      stats = {'logits': jnp.mean(attention_logits(q, k), axis=1)}
      out = attention_weights_and_values(q, k, v, allowed=allowed)
    elif self.attention == 'plain':
      out = attention_weights_and_values(q, k, v, allowed=allowed)
    else:
      bias = None
      if allowed is not None:
        bias = mask_to_bias(allowed)
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
      out = fused_attention(q, k, v, bias, self.attention)
    out = dense(dim, dtype=self.dtype, name='proj')(out.reshape(batch, length, dim))
    return out if modifier is None else (out, stats)


class Block(nn.Module):
  """Pre-norm ViT block (timm `Block`): x + attn(norm1(x)); x + mlp(norm2(x)).

  `norm_eps` is the LayerNorm epsilon: 1e-5 in MixMIM, 1e-6 in MAE.
  """
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see compute_options.py
  norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, allowed: Optional[jax.Array] = None,
               train: bool = False, modifier: Optional[AttentionModifier] = None):
    """x: [B, N, C] float32 residual stream. Returns [B, N, C].

    With a `modifier` (see `AttentionModifier`), returns ([B, N, C], the attention's statistics).
    """
    drop = DropPath(self.drop_path)
    y = layer_norm(epsilon=self.norm_eps, dtype=self.dtype, name='norm1')(x)
    y = Attention(self.num_heads, dtype=self.dtype, attention=self.attention, name='attn')(
        y, allowed, modifier)
    y, stats = (y, None) if modifier is None else y
    x = x + drop(y, deterministic=not train)
    y = layer_norm(epsilon=self.norm_eps, dtype=self.dtype, name='norm2')(x)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    x = x + drop(y, deterministic=not train)
    return x if modifier is None else (x, stats)
