"""Official MixMIM checkpoints (Sense-X/MixMIM): pretraining models and fine-tuned classifiers.

Input size, windows, decoder depth and class count are read off the tensors; the official name
fixes the width and is checked against them. A fine-tuned checkpoint at a new size carries the
pretraining sin-cos table resized (usually from 224); the grid it was made on is found by trying.
"""
import dataclasses
from typing import Mapping, Optional

import numpy as np

from mixmae_jax import architectures
from mixmae_jax.interop import ConversionError
from mixmae_jax.networks import resolution, swin
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.position_embedding import sincos_2d
from mixmae_jax.objectives.mixmae import MixMAEConfig

ARCHS = {'mixmim_base': 'base', 'mixmim_large': 'large', 'mixmim_huge': 'huge'}


def _window(state_dict, stage: int) -> int:
  table = state_dict.get(f'layers.{stage}.blocks.0.attn.relative_position_bias_table')
  if table is None:
    raise ConversionError(f'no layers.{stage}.blocks.0.attn.relative_position_bias_table: '
                          f'not a MixMIM checkpoint?')
  return (int(round(table.shape[0]**0.5)) + 1) // 2


def _pos_embed_grid(table: np.ndarray, embed_dim: int, grid: int, patch: int) -> int:
  """The grid the checkpoint's sin-cos table was made on (0: its own), by trying each."""
  table = table.reshape(grid, grid, embed_dim)
  candidates = [grid, 224 // patch] + list(range(2, 4 * grid))
  for source in dict.fromkeys(candidates):
    made = sincos_2d(embed_dim, source, source).reshape(source, source, embed_dim)
    if source != grid:
      made = resolution.bicubic_resize(made, grid, grid)
    if np.allclose(made, table, atol=1e-4):
      return 0 if source == grid else source
  raise ConversionError('absolute_pos_embed is neither a sin-cos table nor a resized one.')


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping):
  """The MixMAEConfig or ClassifierConfig an official MixMIM state dict was made with."""
  size = ARCHS[arch_name]
  embed_dim = swin.SIZES[size][0]
  proj = state_dict.get('patch_embed.proj.weight')
  if proj is None:
    raise ConversionError('no patch_embed.proj.weight: not a MixMIM checkpoint.')
  if proj.shape[0] != embed_dim:
    guess = [n for n, s in ARCHS.items() if swin.SIZES[s][0] == proj.shape[0]]
    raise ConversionError(f'--arch {arch_name} has width {embed_dim} but the checkpoint has '
                          f'{proj.shape[0]}' + (f': it looks like {guess[0]}.' if guess else '.'))
  patch = proj.shape[-1]
  pos = state_dict.get('absolute_pos_embed')
  grid = int(round(pos.shape[1]**0.5)) if pos is not None else 224 // patch
  windows = tuple(_window(state_dict, s) for s in range(4))
  encoder = swin.config(size, img_size=grid * patch, patch_size=patch, window_sizes=windows)
  if pos is not None:
    encoder = dataclasses.replace(
        encoder, pos_embed_grid=_pos_embed_grid(pos, embed_dim, grid, patch))
  if 'head.weight' in state_dict:
    return ClassifierConfig(encoder=encoder, num_classes=state_dict['head.weight'].shape[0])
  if 'decoder_embed.weight' in state_dict:
    depth = len({k.split('.')[1] for k in state_dict if k.startswith('decoder_blocks.')})
    decoder = DecoderConfig(dim=state_dict['decoder_embed.weight'].shape[0], depth=depth,
                            num_heads=options.get('decoder_num_heads', 16))
    return MixMAEConfig(encoder=encoder, decoder=decoder)
  raise ConversionError('neither a fine-tuned classifier (no head.weight) nor a pretraining '
                        'checkpoint (no decoder_embed.weight).')


def export_problem(arch, arch_name: Optional[str]) -> Optional[str]:
  """Why `arch` cannot be written as an official MixMIM model (named or any), or None."""
  kind = architectures.kind(arch)
  if kind == 'pretraining' and arch.objective != 'mixmae':
    return f'a {arch.objective} pretraining model is not a MixMIM one.'
  encoder = arch.encoder if kind != 'encoder' else arch
  if encoder.name != 'swin' or not encoder.abs_pos_embed:
    return f'a {encoder.name} encoder without MixMIM\'s absolute position table is not a ' \
           f'MixMIM Swin.'
  if getattr(arch, 'mix_embedding', False):
    return 'this model has a mix embedding, which the official code lacks.'
  if arch_name is not None and swin.SIZES[ARCHS[arch_name]][0] != encoder.embed_dim:
    return f'--arch {arch_name} does not match the checkpoint (width {encoder.embed_dim}).'
  return None
