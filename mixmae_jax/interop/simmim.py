"""Official SimMIM checkpoints (microsoft/SimMIM) of the standard Swin: pretraining models
(`SimMIM` with `encoder.*` = `SwinTransformerForSimMIM` and `decoder.0`) and fine-tuned
classifiers (`SwinTransformer`, no prefix).

The official name fixes width and depth; windows are read off the bias tables, the input size
off the shifted blocks' cross-region masks (`attn_mask`, one per window of the first stage), the
class count off the head. The mask unit and ratio are the recipe's (32 px, 0.6): a checkpoint
does not store them. Pretraining keys carry the `encoder.` prefix of the official model, which
our flat params do not: `to_our_names` and `to_official_names` take it off and put it back.
"""
from typing import Dict, Mapping, Optional

import numpy as np

from mixmae_jax import architectures
from mixmae_jax.interop import ConversionError
from mixmae_jax.networks import swin
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.objectives.simmim import SimMIMConfig

ARCHS = {'simmim_swin_base': 'base', 'simmim_swin_large': 'large'}
PREFIX = 'encoder.'
DECODER = 'decoder.'


def _strip(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state_dict.items()}


def _encoder(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping):
  """The standard Swin of an (unprefixed) official state dict."""
  size = ARCHS[arch_name]
  embed_dim, depths, _ = swin.SIZES[size]
  proj = state_dict.get('patch_embed.proj.weight')
  if proj is None:
    raise ConversionError('no patch_embed.proj.weight: not a SimMIM Swin checkpoint.')
  if proj.shape[0] != embed_dim:
    guess = [n for n, s in ARCHS.items() if swin.SIZES[s][0] == proj.shape[0]]
    raise ConversionError(f'--arch {arch_name} has width {embed_dim} but the checkpoint has '
                          f'{proj.shape[0]}' + (f': it looks like {guess[0]}.' if guess else '.'))
  if 'absolute_pos_embed' in state_dict:
    raise ConversionError('the checkpoint has an absolute position embedding (ape=True), which '
                          'the released SimMIM Swins do not.')
  windows = []
  for s in range(len(depths)):
    table = state_dict.get(f'layers.{s}.blocks.0.attn.relative_position_bias_table')
    if table is None:
      raise ConversionError(f'no layers.{s}.blocks.0.attn.relative_position_bias_table: not a '
                            f'SimMIM Swin checkpoint?')
    windows.append((int(round(table.shape[0]**0.5)) + 1) // 2)
  patch = proj.shape[-1]
  img_size = options.get('img_size', 0)
  shift_mask = state_dict.get('layers.0.blocks.1.attn_mask')
  if shift_mask is not None:
    img_size = windows[0] * int(round(shift_mask.shape[0]**0.5)) * patch
  elif not img_size:
    raise ConversionError('no layers.0.blocks.1.attn_mask to read the input size from: pass '
                          '--img_size.')
  return swin.config(size, img_size=img_size, patch_size=patch, window_sizes=tuple(windows),
                     **swin.STANDARD)


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping):
  """The SimMIMConfig or ClassifierConfig an official SimMIM state dict was made with."""
  if 'head.weight' in state_dict:
    return ClassifierConfig(encoder=_encoder(state_dict, arch_name, options),
                            num_classes=state_dict['head.weight'].shape[0])
  if 'decoder.0.weight' not in state_dict or not any(k.startswith(PREFIX) for k in state_dict):
    raise ConversionError('neither a fine-tuned classifier (no head.weight) nor a pretraining '
                          'checkpoint (no encoder.* and decoder.0.weight).')
  return SimMIMConfig(encoder=_encoder(_strip(state_dict), arch_name, options))


def to_our_names(state_dict: Mapping[str, np.ndarray], arch) -> Dict[str, np.ndarray]:
  """Pretraining keys lose the official `encoder.` prefix; classifiers have none."""
  if architectures.kind(arch) != 'pretraining':
    return dict(state_dict)
  return _strip(state_dict)


def to_official_names(state_dict: Mapping[str, np.ndarray], arch) -> Dict[str, np.ndarray]:
  """Inverse of `to_our_names`: every pretraining key but the decoder's gets `encoder.`."""
  if architectures.kind(arch) != 'pretraining':
    return dict(state_dict)
  return {k if k.startswith(DECODER) else PREFIX + k: v for k, v in state_dict.items()}


def export_problem(arch, arch_name: Optional[str]) -> Optional[str]:
  """Why `arch` cannot be written as an official SimMIM Swin (named or any), or None."""
  kind = architectures.kind(arch)
  if kind == 'encoder':
    return 'SimMIM releases pretraining models and classifiers, not bare encoders.'
  if kind == 'pretraining' and arch.objective != 'simmim':
    return f'a {arch.objective} pretraining model is not a SimMIM one.'
  encoder = arch.encoder
  if encoder.name != 'swin' or not encoder.shifted_windows or encoder.abs_pos_embed:
    return 'only the standard Swin (shifted windows, no absolute embedding) is a SimMIM Swin.'
  if kind == 'pretraining' and arch.decoder != 'conv':
    return 'SimMIM\'s decoder is the conv one (objective.decoder=conv).'
  if arch_name is not None and swin.SIZES[ARCHS[arch_name]][0] != encoder.embed_dim:
    return f'--arch {arch_name} does not match the checkpoint (width {encoder.embed_dim}).'
  return None
