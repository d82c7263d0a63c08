"""Analytic FLOP count of MixMAE pretraining, to set beside XLA's count and to compute MFU.

Counts the multiply-adds of every matmul and convolution as 2 FLOPs and nothing else: layer
norms, softmax, GELU, the loss, the optimizer and the mixing gathers are left out (XLA's count
includes them; they are a few percent). Per image of a MixMAE step:
- the encoder runs once on the mixed image: patch embedding, in every block qkv, q.k^T, attn.v,
  proj and the MLP (attention over the whole window, N x N, although the same-source mask hides
  about half of the pairs: the masked pairs are computed and thrown away), patch merging;
- the decoder embeds the image's tokens once and then runs both reconstruction branches
  (2 sequences of L = (img_size / 32)^2 tokens per image): blocks and the prediction head.
Training costs 3x the forward pass (the backward pass computes the gradients with respect to both
activations and weights); activation checkpointing recomputes parts of the forward pass on top of
that, which is not counted: these are the *model* FLOPs of MFU, not the hardware's.
"""
from typing import Dict

from mixmae_jax.architecture import DecoderConfig, MixMAEConfig, SwinConfig

TRAIN_MULTIPLIER = 3  # forward + backward (2x forward)


def _transformer_block(tokens: int, dim: int, attended: int, mlp_ratio: float) -> float:
  """One pre-norm block on `tokens` tokens of width `dim`, each attending to `attended` keys."""
  hidden = int(dim * mlp_ratio)
  projections = 2 * tokens * dim * (3 * dim + dim)  # qkv + proj
  attention = 2 * 2 * tokens * attended * dim  # q.k^T and attn.v over all heads
  mlp = 2 * 2 * tokens * dim * hidden
  return float(projections + attention + mlp)


def swin_forward_flops(enc: SwinConfig) -> Dict[str, float]:
  """Forward FLOPs of the Swin encoder on one image, by part."""
  tokens0 = enc.stage_grid(0)**2
  out = {'patch_embed': 2.0 * tokens0 * enc.patch_size**2 * enc.in_chans * enc.embed_dim}
  blocks = merging = 0.0
  for s in range(enc.num_stages):
    tokens, dim, window = enc.stage_grid(s)**2, enc.stage_dim(s), enc.stage_window(s)
    blocks += enc.depths[s] * _transformer_block(tokens, dim, window * window, enc.mlp_ratio)
    if s < enc.num_stages - 1:  # LayerNorm(4C) then Linear(4C -> 2C) on tokens / 4
      merging += 2.0 * (tokens // 4) * (4 * dim) * (2 * dim)
  out.update(blocks=blocks, patch_merging=merging)
  return out


def decoder_forward_flops(enc: SwinConfig, dec: DecoderConfig, branches: int = 2) -> Dict[str, float]:
  """Forward FLOPs of the decoder for one image: embed once, `branches` sequences after."""
  length = (enc.img_size // enc.stride)**2
  pixels = enc.stride**2 * enc.in_chans
  return {
      'decoder_embed': 2.0 * length * enc.num_features * dec.dim,
      'decoder_blocks': branches * dec.depth * _transformer_block(length, dec.dim, length,
                                                                  dec.mlp_ratio),
      'decoder_pred': branches * 2.0 * length * dec.dim * pixels,
  }


def mixmae_flops_per_image(arch: MixMAEConfig) -> Dict[str, float]:
  """Model FLOPs of one MixMAE training image: parts of the forward pass and the totals.

  Keys: every part of `swin_forward_flops` and `decoder_forward_flops`, `encoder_forward`,
  `decoder_forward`, `forward`, and `train` (= 3 x forward).
  """
  enc = swin_forward_flops(arch.encoder)
  dec = decoder_forward_flops(arch.encoder, arch.decoder)
  out = {**enc, **dec, 'encoder_forward': sum(enc.values()), 'decoder_forward': sum(dec.values())}
  out['forward'] = out['encoder_forward'] + out['decoder_forward']
  out['train'] = TRAIN_MULTIPLIER * out['forward']
  return out
