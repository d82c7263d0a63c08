"""Analytic FLOP counts of the layers networks are made of, to set beside XLA's count and for MFU.

Every matmul and convolution counts 2 FLOPs per multiply-add; nothing else is counted (layer
norms, softmax, GELU, losses, the optimizer and gathers are a few percent, and XLA's count has
them). Training costs 3x the forward pass (the backward pass computes gradients with respect to
activations and weights); activation checkpointing recomputes parts of the forward pass on top,
which is not counted: these are the *model* FLOPs of MFU, not the hardware's.
"""

TRAIN_MULTIPLIER = 3  # forward + backward (2x forward)


def linear(tokens: int, fan_in: int, fan_out: int) -> float:
  """A dense layer (or a patchifying convolution) applied to `tokens` vectors."""
  return 2.0 * tokens * fan_in * fan_out


def transformer_block(tokens: int, dim: int, attended: int, mlp_ratio: float) -> float:
  """One pre-norm block on `tokens` tokens of width `dim`, each attending to `attended` keys.

  Masked attention pairs are computed and thrown away, so they count.
  """
  hidden = int(dim * mlp_ratio)
  projections = linear(tokens, dim, 3 * dim) + linear(tokens, dim, dim)  # qkv + proj
  attention = 2.0 * 2 * tokens * attended * dim  # q.k^T and attn.v over all heads
  mlp = linear(tokens, dim, hidden) + linear(tokens, hidden, dim)
  return projections + attention + mlp


def with_totals(encoder: dict, decoder: dict) -> dict:
  """Parts of a pretraining model's forward pass plus `encoder_forward`, `decoder_forward`,
  `forward` and `train` (3 x forward)."""
  out = {**encoder, **decoder, 'encoder_forward': sum(encoder.values()),
         'decoder_forward': sum(decoder.values())}
  out['forward'] = out['encoder_forward'] + out['decoder_forward']
  out['train'] = TRAIN_MULTIPLIER * out['forward']
  return out
