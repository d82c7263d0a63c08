"""Official UM-MAE checkpoints (implus/UM-MAE): pretraining models (`models_mae_swin.py`,
`models_mae_pvt.py`, with their decoder) and fine-tuned classifiers (`models_swin.py`,
`models_pvt.py`), for Swin-T, Swin-L and PVT-S.

The official name fixes the family and size; the position-MLP width, decoder width and depth,
whether secondary masking was on (`vis_mask_token`) and the class count are read off the tensors,
PVT's input size off its position table. Not stored, so taken from the options: a Swin's input
size (`img_size`, 256), the decoder's heads (16) and the decoder position order. A converted
pretraining checkpoint defaults to the official order (`decoder_pos_order='official'`): it was
trained with it, and only then does it reproduce the official numbers. Windows are the recipe's:
8 (on the compact grid) in pretraining, 16 in fine-tuning.
"""
import dataclasses
from typing import Mapping, Optional

import numpy as np

from mixmae_jax import architectures
from mixmae_jax.interop import ConversionError
from mixmae_jax.networks import pvt, ummae_swin
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.ummae import UMMAEConfig

ARCHS = {'ummae_swin_tiny': ('ummae_swin', 'tiny'), 'ummae_swin_large': ('ummae_swin', 'large'),
         'ummae_pvt_small': ('pvt', 'small')}
_MODULES = {'ummae_swin': ummae_swin, 'pvt': pvt}


def _num_blocks(state_dict: Mapping[str, np.ndarray], prefix: str) -> int:
  return len({k.split('.')[1] for k in state_dict if k.startswith(prefix + '.')})


def _encoder(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping,
             classifier: bool):
  family, size = ARCHS[arch_name]
  module = _MODULES[family]
  encoder = module.config(size)
  proj = state_dict.get('patch_embed.proj.weight')
  if proj is None:
    raise ConversionError('no patch_embed.proj.weight: not a UM-MAE checkpoint.')
  if proj.shape[0] != encoder.embed_dim:
    guess = [n for n, (f, s) in ARCHS.items() if _MODULES[f].config(s).embed_dim == proj.shape[0]]
    raise ConversionError(f'--arch {arch_name} has width {encoder.embed_dim} but the checkpoint '
                          f'has {proj.shape[0]}' + (f': it looks like {guess[0]}.' if guess
                                                    else '.'))
  blocks = _num_blocks(state_dict, 'blocks')
  if blocks != sum(encoder.depths):
    raise ConversionError(f'--arch {arch_name} has {sum(encoder.depths)} blocks but the '
                          f'checkpoint has {blocks}.')
  if classifier:
    encoder = dataclasses.replace(encoder, **module.CLASSIFIER_FIELDS)
  if family == 'pvt':
    pos = state_dict.get('pos_embed')
    if pos is None:
      raise ConversionError('no pos_embed: not a UM-MAE PVT checkpoint.')
    grid = int(round(pos.shape[1]**0.5))
    return dataclasses.replace(encoder, img_size=grid * encoder.patch_size)
  posmlp = state_dict.get('blocks.0.attn.posmlp.0.weight')
  if posmlp is None:
    raise ConversionError('no blocks.0.attn.posmlp.0.weight: not a UM-MAE Swin checkpoint.')
  return dataclasses.replace(encoder, posmlp_dim=posmlp.shape[0],
                             img_size=options.get('img_size', 256))


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping):
  """The UMMAEConfig or ClassifierConfig an official UM-MAE state dict was made with."""
  if 'head.weight' in state_dict:
    encoder = _encoder(state_dict, arch_name, options, classifier=True)
    return ClassifierConfig(encoder=encoder, num_classes=state_dict['head.weight'].shape[0])
  if 'decoder_embed.weight' not in state_dict:
    raise ConversionError('neither a fine-tuned classifier (no head.weight) nor a pretraining '
                          'checkpoint (no decoder_embed.weight).')
  encoder = _encoder(state_dict, arch_name, options, classifier=False)
  decoder = DecoderConfig(dim=state_dict['decoder_embed.weight'].shape[0] // 4,
                          depth=_num_blocks(state_dict, 'decoder_blocks'),
                          num_heads=options.get('decoder_num_heads', 16), norm_eps=1e-6)
  return UMMAEConfig(encoder=encoder, decoder=decoder,
                     secondary_ratio=0.25 if 'vis_mask_token' in state_dict else 0.0,
                     norm_pix_loss=options.get('norm_pix_loss', True),
                     decoder_pos_order=options.get('decoder_pos_order', 'official'))


def export_problem(arch, arch_name: Optional[str]) -> Optional[str]:
  """Why `arch` cannot be written as an official UM-MAE model (named or any), or None."""
  kind = architectures.kind(arch)
  if kind == 'encoder':
    return 'UM-MAE releases pretraining models and classifiers, not bare encoders.'
  if kind == 'pretraining' and arch.objective != 'ummae':
    return f'a {arch.objective} pretraining model is not a UM-MAE one.'
  encoder = arch.encoder
  if encoder.name not in _MODULES:
    return f'a {encoder.name} encoder is not one of UM-MAE\'s (ummae_swin, pvt).'
  if kind == 'classifier' and encoder.head_norm != 'fc_norm':
    return 'the official classifiers pool into fc_norm; this one reads the final norm.'
  if arch_name is not None:
    family, size = ARCHS[arch_name]
    want = _MODULES[family].config(size)
    if family != encoder.name or want.embed_dim != encoder.embed_dim or \
        want.depths != encoder.depths:
      return f'--arch {arch_name} does not match the checkpoint ({encoder.name}, width ' \
             f'{encoder.embed_dim}, depths {encoder.depths}).'
  return None
