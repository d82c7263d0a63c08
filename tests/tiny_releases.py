"""Tiny stand-ins for published releases: official-format files of micro-sized MixMIM, MAE and
UM-MAE models, and table entries naming them, so the weights cache, the converters and the
notebook API run end to end against a local HTTP server in seconds.

`register()` adds a `micro` size to each family and the `*_micro` releases to the table; a
subprocess calls it too (`python -c 'import tiny_releases; tiny_releases.register(); ...'`).
"""
import dataclasses
import os

import jax
import numpy as np

from mixmae_jax import architectures, interop
from mixmae_jax.interop import mae as mae_family
from mixmae_jax.interop import mixmim as mixmim_family
from mixmae_jax.interop import pytorch_names
from mixmae_jax.interop import ummae as ummae_family
from mixmae_jax.networks import swin, ummae_swin, vit
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.mae import MAEConfig
from mixmae_jax.objectives.mixmae import MixMAEConfig
from mixmae_jax.objectives.ummae import UMMAEConfig
from mixmae_jax.weights import table

MIXMIM = MixMAEConfig(encoder=swin.SwinConfig(img_size=64, embed_dim=8, depths=(1, 1, 1, 1),
                                              num_heads=(1, 1, 1, 1),
                                              window_sizes=(4, 4, 4, 2)),
                      decoder=DecoderConfig(dim=16, depth=1, num_heads=2))
MAE_ENCODER = vit.ViTConfig(img_size=64, patch_size=16, embed_dim=16, depth=1, num_heads=2,
                            global_pool=False)
MAE = MAEConfig(encoder=dataclasses.replace(MAE_ENCODER, global_pool=True),
                decoder=DecoderConfig(dim=16, depth=1, num_heads=2, norm_eps=1e-6),
                norm_pix_loss=True)
UMMAE_SWIN = (16, (2, 1, 1, 1), (1, 2, 2, 4), 8)

RELEASES = [
    table.Release('mixmim_micro', 'gdrive', 'drive-id-of-mixmim-micro', 'mixmim_micro.pth',
                  'mixmim_micro', 'pretraining', 'none (a test stand-in)',
                  options={'decoder_num_heads': 2}),
    table.Release('mae_vit_micro_hf', 'hf', 'tests/vit_micro.mae/model.safetensors',
                  'vit_micro.mae.safetensors', 'mae_vit_micro', 'encoder',
                  'none (a test stand-in)'),
    table.Release('mae_vit_micro', 'url', 'http://127.0.0.1:9/mae_micro_full.pth',
                  'mae_micro_full.pth', 'mae_vit_micro', 'pretraining',
                  'none (a test stand-in)', options={'decoder_num_heads': 2}),
    table.Release('ummae_swin_micro', 'gdrive', 'drive-id-of-ummae-micro', 'ummae_micro.pth',
                  'ummae_swin_micro', 'pretraining', 'none (a test stand-in)',
                  options={'decoder_num_heads': 2}),
]


def register(monkeypatch=None) -> None:
  """The micro sizes in each family and the micro releases in the table; with a pytest
  `monkeypatch`, undone when the test ends (other tests see the published table only)."""
  setitem = monkeypatch.setitem if monkeypatch is not None else (
      lambda mapping, key, value: mapping.__setitem__(key, value))
  setitem(swin.SIZES, 'micro', (8, (1, 1, 1, 1), (1, 1, 1, 1)))
  setitem(mixmim_family.ARCHS, 'mixmim_micro', 'micro')
  setitem(vit.SIZES, 'micro', (16, 1, 2, 16))
  setitem(mae_family.ARCHS, 'mae_vit_micro', 'micro')
  setitem(ummae_swin.SIZES, 'micro', UMMAE_SWIN)
  setitem(ummae_family.ARCHS, 'ummae_swin_micro', ('ummae_swin', 'micro'))
  for release in RELEASES:
    setitem(table.RELEASES, release.name, release)


def ummae_arch():
  embed, depths, heads, posmlp = UMMAE_SWIN
  encoder = ummae_swin.config('tiny', embed_dim=embed, depths=depths, num_heads=heads,
                              posmlp_dim=posmlp)
  return UMMAEConfig(encoder=encoder, decoder=DecoderConfig(dim=16, depth=1, num_heads=2,
                                                            norm_eps=1e-6),
                     decoder_pos_order='official')


def official_state_dict(arch, arch_name: str, seed: int = 0):
  """A randomly initialised state dict of `arch` under the official names of `arch_name`."""
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(np.float32), shapes)
  family = interop.family_module(interop.official_archs()[arch_name])
  return interop.official_names(family, pytorch_names.state_dict_from_params(params, arch), arch)


def write_files(directory: str) -> dict:
  """The micro releases' official files in `directory` (PyTorch files only when torch is
  installed); returns {file name: arch}."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  written = {}
  save_file(official_state_dict(MAE_ENCODER, 'mae_vit_micro'),
            os.path.join(directory, 'vit_micro.mae.safetensors'))
  written['vit_micro.mae.safetensors'] = MAE_ENCODER
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return written
  for file_name, arch, name in (('mixmim_micro.pth', MIXMIM, 'mixmim_micro'),
                                ('mae_micro_full.pth', MAE, 'mae_vit_micro'),
                                ('ummae_micro.pth', ummae_arch(), 'ummae_swin_micro')):
    state_dict = official_state_dict(arch, name)
    torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}},
               os.path.join(directory, file_name))
    written[file_name] = arch
  return written
