"""Official MAE checkpoints (facebookresearch/mae): pretraining models with their decoder
(`mae_pretrain_vit_base_full.pth`-style), encoder-only ones (`mae_pretrain_vit_base.pth`) and
fine-tuned ViT classifiers (`mae_finetuned_vit_base.pth`).

The official name fixes width, depth, heads and patch; the input size comes from the position
table and the decoder's depth and width from its keys. A `pos_embed` equal to the sin-cos table is
the pretraining model's fixed buffer; any other is a learned table (fine-tuned models). A
classifier with `fc_norm` pools globally; one with `norm` reads the cls token.
"""
import dataclasses
from typing import Mapping, Optional

import numpy as np

from mixmae_jax import architectures
from mixmae_jax.interop import ConversionError
from mixmae_jax.networks import vit
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.mae import MAEConfig

ARCHS = {'mae_vit_base_patch16': 'base', 'mae_vit_large_patch16': 'large',
         'mae_vit_huge_patch14': 'huge'}


def _encoder(state_dict: Mapping[str, np.ndarray], arch_name: str) -> vit.ViTConfig:
  size = ARCHS[arch_name]
  encoder = vit.config(size)
  proj = state_dict.get('patch_embed.proj.weight')
  if proj is None:
    raise ConversionError('no patch_embed.proj.weight: not an MAE ViT checkpoint.')
  shape = (encoder.embed_dim, encoder.in_chans, encoder.patch_size, encoder.patch_size)
  if tuple(proj.shape) != shape:
    guess = [n for n, s in ARCHS.items()
             if (vit.SIZES[s][0], vit.SIZES[s][3]) == (proj.shape[0], proj.shape[-1])]
    raise ConversionError(f'--arch {arch_name} has a patch embedding of shape {shape} but the '
                          f'checkpoint has {tuple(proj.shape)}' +
                          (f': it looks like {guess[0]}.' if guess else '.'))
  depth = len({k.split('.')[1] for k in state_dict if k.startswith('blocks.')})
  if depth != encoder.depth:
    raise ConversionError(f'--arch {arch_name} has {encoder.depth} blocks but the checkpoint '
                          f'has {depth}.')
  pos = state_dict.get('pos_embed')
  if pos is None:
    raise ConversionError('no pos_embed: not an MAE ViT checkpoint.')
  grid = int(round((pos.shape[1] - 1)**0.5))
  encoder = dataclasses.replace(encoder, img_size=grid * encoder.patch_size)
  sincos = vit.sincos_table(encoder.embed_dim, grid)
  fixed = pos.shape == sincos.shape and np.allclose(pos, sincos, atol=1e-5)
  return dataclasses.replace(encoder, pos_embed='sincos' if fixed else 'learned')


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str, options: Mapping):
  """The MAEConfig, ClassifierConfig or ViTConfig an official MAE state dict was made with."""
  encoder = _encoder(state_dict, arch_name)
  if 'head.weight' in state_dict:
    encoder = dataclasses.replace(encoder, pos_embed='learned',  # models_vit learns its table
                                  global_pool='fc_norm.weight' in state_dict)
    return ClassifierConfig(encoder=encoder, num_classes=state_dict['head.weight'].shape[0])
  if 'decoder_embed.weight' in state_dict:
    depth = len({k.split('.')[1] for k in state_dict if k.startswith('decoder_blocks.')})
    decoder = DecoderConfig(dim=state_dict['decoder_embed.weight'].shape[0], depth=depth,
                            num_heads=options.get('decoder_num_heads', 16), norm_eps=1e-6)
    return MAEConfig(encoder=encoder, decoder=decoder,
                     norm_pix_loss=options.get('norm_pix_loss', True))
  return dataclasses.replace(encoder, global_pool=False)  # encoder only: norm + cls token


def export_problem(arch, arch_name: Optional[str]) -> Optional[str]:
  """Why `arch` cannot be written as an official MAE model (named or any), or None."""
  kind = architectures.kind(arch)
  if kind == 'pretraining' and arch.objective != 'mae':
    return f'a {arch.objective} pretraining model is not an MAE one.'
  encoder = arch if kind == 'encoder' else arch.encoder
  if encoder.name != 'vit':
    return f'a {encoder.name} encoder is not an MAE ViT.'
  if arch_name is not None:
    want = vit.config(ARCHS[arch_name])
    for field in vit.SHAPE_FIELDS:
      if getattr(want, field) != getattr(encoder, field):
        return (f'--arch {arch_name} has {field}={getattr(want, field)} but the checkpoint has '
                f'{getattr(encoder, field)}.')
  return None
