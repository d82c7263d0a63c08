"""Official PyTorch MixMIM checkpoints to ours, and ours to official state dicts.

  python -m mixmae_jax.convert SRC.pth DST_DIR --arch mixmim_base   # official -> ours
  python -m mixmae_jax.convert SRC_DIR DST.pth                      # ours -> official

Official files may be a pretraining checkpoint (with the decoder) or a fine-tuned classifier,
told apart by their keys, bare or inside a training checkpoint's `model` entry. Input size,
windows, decoder depth and class count are read off the tensors; `--arch` fixes the width and
depth and is checked against them. Files are read with `torch.load(weights_only=True)`, which
never runs pickled code. The result is a checkpoint `mixmae_jax.load(DST_DIR)` opens; exported
state dicts load into the official `MixMIM` classes with `strict=True`.
"""
import argparse
import dataclasses
import os
import sys
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from mixmae_jax import architecture, pytorch_names
from mixmae_jax.architecture import ClassifierConfig, DecoderConfig, MixMAEConfig
from mixmae_jax.position_embedding import sincos_2d
from mixmae_jax.resolution import bicubic_resize

OFFICIAL_ARCHS = {'mixmim_base': 'base', 'mixmim_large': 'large', 'mixmim_huge': 'huge'}


class ConversionError(ValueError):
  """A checkpoint that does not fit the requested conversion; the message says why."""


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError('reading and writing .pth files needs PyTorch: '
                          'pip install "mixmae_jax[torch]"') from e
  return torch


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """An official checkpoint's state dict as numpy arrays (floats as float32)."""
  torch = _torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # truncated zips, pickles with code, non-torch files
    raise ConversionError(f'{path} could not be read as a PyTorch checkpoint ({type(e).__name__}:'
                          f' {e}). Is it complete, and a MixMIM .pth file?') from e
  if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
    obj = obj['model']
  if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
    raise ConversionError(f'{path} holds no state dict (a mapping of names to tensors).')
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in obj.items()}


def write_state_dict(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
  """Save as the official code does: {'model': state dict}."""
  torch = _torch()
  torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}}, path)


def _window(state_dict, stage: int) -> int:
  table = state_dict.get(f'layers.{stage}.blocks.0.attn.relative_position_bias_table')
  if table is None:
    raise ConversionError(f'no layers.{stage}.blocks.0.attn.relative_position_bias_table: '
                          f'not a MixMIM checkpoint?')
  return (int(round(table.shape[0]**0.5)) + 1) // 2


def _pos_embed_grid(table: np.ndarray, embed_dim: int, grid: int, patch: int) -> int:
  """The grid the checkpoint's sin-cos table was made on (0: its own), by trying each.

  Fine-tuned checkpoints at a new size carry the pretraining table resized (usually from 224).
  """
  table = table.reshape(grid, grid, embed_dim)
  candidates = [grid, 224 // patch] + list(range(2, 4 * grid))
  for source in dict.fromkeys(candidates):
    made = sincos_2d(embed_dim, source, source).reshape(source, source, embed_dim)
    if source != grid:
      made = bicubic_resize(made, grid, grid)
    if np.allclose(made, table, atol=1e-4):
      return 0 if source == grid else source
  raise ConversionError('absolute_pos_embed is neither a sin-cos table nor a resized one.')


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str,
               decoder_num_heads: int = 16):
  """The MixMAEConfig or ClassifierConfig an official state dict was made with."""
  if arch_name not in OFFICIAL_ARCHS:
    raise ConversionError(f'--arch {arch_name!r}: choose one of {sorted(OFFICIAL_ARCHS)}.')
  size = OFFICIAL_ARCHS[arch_name]
  embed_dim = architecture.SWIN_SIZES[size][0]
  proj = state_dict.get('patch_embed.proj.weight')
  if proj is None:
    raise ConversionError('no patch_embed.proj.weight: not a MixMIM checkpoint.')
  if proj.shape[0] != embed_dim:
    guess = [n for n, s in OFFICIAL_ARCHS.items() if architecture.SWIN_SIZES[s][0] == proj.shape[0]]
    raise ConversionError(f'--arch {arch_name} has width {embed_dim} but the checkpoint has '
                          f'{proj.shape[0]}' + (f': it looks like {guess[0]}.' if guess else '.'))
  patch = proj.shape[-1]
  pos = state_dict.get('absolute_pos_embed')
  grid = int(round(pos.shape[1]**0.5)) if pos is not None else 224 // patch
  windows = tuple(_window(state_dict, s) for s in range(4))
  encoder = architecture.swin_config(size, img_size=grid * patch, patch_size=patch,
                                     window_sizes=windows)
  if pos is not None:
    encoder = dataclasses.replace(
        encoder, pos_embed_grid=_pos_embed_grid(pos, embed_dim, grid, patch))
  if 'head.weight' in state_dict:
    return ClassifierConfig(encoder=encoder, num_classes=state_dict['head.weight'].shape[0])
  if 'decoder_embed.weight' in state_dict:
    depth = len({k.split('.')[1] for k in state_dict if k.startswith('decoder_blocks.')})
    decoder = DecoderConfig(dim=state_dict['decoder_embed.weight'].shape[0], depth=depth,
                            num_heads=decoder_num_heads)
    return MixMAEConfig(encoder=encoder, decoder=decoder)
  raise ConversionError('neither a fine-tuned classifier (no head.weight) nor a pretraining '
                        'checkpoint (no decoder_embed.weight).')


def check_keys(state_dict: Mapping[str, np.ndarray], arch) -> None:
  """Raise listing missing, unexpected and mis-shaped keys against the architecture."""
  from mixmae_jax.loading import abstract_params, build_model  # pylint: disable=import-outside-toplevel
  expected = pytorch_names.expected_shapes(abstract_params(build_model(arch)), arch)
  missing = sorted(set(expected) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(expected))
  misshaped = sorted(f'{k}: {tuple(state_dict[k].shape)} (expected {expected[k]})'
                     for k in set(expected) & set(state_dict)
                     if tuple(state_dict[k].shape) != expected[k])
  problems = [(name, keys) for name, keys in (('missing', missing), ('unexpected', unexpected),
                                              ('mis-shaped', misshaped)) if keys]
  if problems:
    lines = [f'{name} ({len(keys)}): ' + ', '.join(keys[:12]) + (' ...' if len(keys) > 12 else '')
             for name, keys in problems]
    raise ConversionError('the checkpoint does not match the architecture:\n  ' +
                          '\n  '.join(lines))


def to_ours(src: str, dst: str, arch_name: str, decoder_num_heads: int = 16):
  """Convert an official .pth to a checkpoint in `dst`; returns the architecture."""
  from mixmae_jax.checkpointing import Checkpointer, checkpoint_dir  # pylint: disable=import-outside-toplevel
  state_dict = read_state_dict(src)
  arch = infer_arch(state_dict, arch_name, decoder_num_heads)
  check_keys(state_dict, arch)
  params = pytorch_names.params_from_state_dict(state_dict, arch)
  ckpt = Checkpointer(checkpoint_dir(dst), keep=1)
  ckpt.save(0, params, None, {'arch': architecture.arch_to_dict(arch), 'step': 0,
                              'converted_from': os.path.abspath(src), 'official_arch': arch_name})
  ckpt.wait()
  ckpt.close()
  return arch


def to_pytorch(src: str, dst: str, arch_name: Optional[str] = None):
  """Export a checkpoint of ours (a workdir, checkpoints dir or step dir) to an official .pth."""
  from mixmae_jax.loading import load  # pylint: disable=import-outside-toplevel
  model, params = load(src)
  arch = model.config
  if getattr(arch, 'mix_embedding', False):
    raise ConversionError('this model has a mix embedding, which the official code lacks.')
  if arch_name is not None:
    size = OFFICIAL_ARCHS.get(arch_name)
    if size is None or architecture.SWIN_SIZES[size][0] != arch.encoder.embed_dim:
      raise ConversionError(f'--arch {arch_name} does not match the checkpoint (width '
                            f'{arch.encoder.embed_dim}).')
  state_dict = pytorch_names.state_dict_from_params(params, arch)
  write_state_dict(dst, state_dict)
  return arch


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('src', help='an official .pth file, or a checkpoint of ours')
  parser.add_argument('dst', help='a directory for ours, or a .pth path for PyTorch')
  parser.add_argument('--arch', choices=sorted(OFFICIAL_ARCHS),
                      help='official model name; required when SRC is a .pth file')
  parser.add_argument('--decoder_num_heads', type=int, default=16,
                      help='decoder heads of a pretraining checkpoint (not stored in it)')
  args = parser.parse_args(argv)
  try:
    if os.path.isfile(args.src):
      if not args.arch:
        parser.error('--arch is required to convert a .pth file')
      arch = to_ours(args.src, args.dst, args.arch, args.decoder_num_heads)
    elif os.path.isdir(args.src):
      arch = to_pytorch(args.src, args.dst, args.arch)
    else:
      raise ConversionError(f'{args.src} does not exist.')
  except ConversionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {args.dst}: {type(arch).__name__} {arch.encoder.img_size}px, windows '
        f'{tuple(arch.encoder.stage_window(s) for s in range(arch.encoder.num_stages))}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
