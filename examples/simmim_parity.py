"""Check converted SimMIM checkpoints against the official PyTorch SimMIM code, number for number.

  python examples/simmim_parity.py --official_repo /path/to/SimMIM \
      [--ummae_repo /path/to/UM-MAE] [--arch simmim_swin_base simmim_swin_large]

Needs torch and timm and a checkout of microsoft/SimMIM (its `models/simmim.py`,
`models/swin_transformer.py` and `data/data_simmim.py` are imported from there, not copied).
Builds official models with random weights (biases, norms and the mask token moved off their
0/1 init), saves them as .pth, converts them with `mixmae_jax.convert`, and compares:
  1. pretraining (Swin at 192, window 6) on the official MaskGenerator's masks: the loss and the
     reconstructed image (`decoder(encoder(x, mask))`);
  2. the exported state dict loads back into the official class with strict=True, unchanged;
  3. a fine-tuned classifier's logits (224, window 7);
  4. fine-tuning from the pretraining checkpoint the official way (`encoder.` prefix removed,
     buffers dropped, load_state_dict strict=False) against ours, on logits, at the pretraining
     size and windows (the official resize of bias tables to other windows calls SciPy's
     `interp2d`, which SciPy 1.14 removed, so it cannot run here);
  5. with `--ummae_repo`: UM-MAE's SimMIM baseline (`models_simmim_swin.simmim_swin_tiny_256`:
     its own Swin, 16 px units at 0.75, linear + 2x shuffle decoder), its state dict read by
     `pytorch_names`, on the same masks: the loss and the predicted patches at masked units.
Prints the largest absolute differences; exits non-zero if any exceeds 1e-4 (relative on the
loss).
"""
import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys
import tempfile

import jax.numpy as jnp
import numpy as np

ARCHS = {'simmim_swin_base': (128, (2, 2, 18, 2), (4, 8, 16, 32), 6, 7),
         'simmim_swin_large': (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 14)}
TOLERANCE = 1e-4


def _perturb(torch, model):
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1 or 'mask_token' in name:
        p.add_(0.1 * torch.randn_like(p))


def _nhwc(x):
  return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _report(name, diff, failures, tolerance=TOLERANCE):
  print(f'  {name}: max |diff| {diff:.3g}')
  if not diff <= tolerance:
    failures.append(name)


def official_swin(models, arch, img_size, window, num_classes, pretraining):
  embed_dim, depths, heads = ARCHS[arch][:3]
  kwargs = dict(img_size=img_size, patch_size=4, in_chans=3, embed_dim=embed_dim,
                depths=list(depths), num_heads=list(heads), window_size=window,
                drop_path_rate=0.0, ape=False, patch_norm=True)
  if pretraining:
    encoder = models['simmim'].SwinTransformerForSimMIM(num_classes=0, **kwargs)
    return models['simmim'].SimMIM(encoder=encoder, encoder_stride=32).eval()
  return models['swin_transformer'].SwinTransformer(num_classes=num_classes, **kwargs).eval()


def check_pretraining(torch, models, arch, workdir, failures):
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  window = ARCHS[arch][3]
  model = official_swin(models, arch, 192, window, 0, pretraining=True)
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/pre.pth')
  assert convert.main([f'{workdir}/pre.pth', f'{workdir}/pre', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/pre')
  np.random.seed(0)
  generator = models['data_simmim'].MaskGenerator(192, 32, 4, 0.6)
  token_mask = torch.tensor(np.stack([generator() for _ in range(2)]))  # [B, 48, 48]
  x = torch.randn(2, 3, 192, 192)
  with torch.no_grad():
    loss = model(x, token_mask)
    rec = model.decoder(model.encoder(x, token_mask))
  units = token_mask[:, ::8, ::8].numpy().astype(np.int32)
  out = ours.apply({'params': params}, _nhwc(x), mask=units)
  print(f'{arch} pretraining: {int(units[0].sum())} of 36 units masked; official loss '
        f'{loss.item():.8f}, ours {float(out["loss"]):.8f}')
  _report('loss (relative)', abs(float(out['loss']) / loss.item() - 1), failures)
  _report('reconstruction', float(np.abs(np.asarray(out['pred']) -
                                         rec.permute(0, 2, 3, 1).numpy()).max()), failures)
  assert convert.main([f'{workdir}/pre', f'{workdir}/back.pth']) == 0
  back = torch.load(f'{workdir}/back.pth', weights_only=True)['model']
  again = official_swin(models, arch, 192, window, 0, pretraining=True)
  again.load_state_dict(back, strict=True)
  diff = max(float((again.state_dict()[k].float() - v.float()).abs().max())
             for k, v in model.state_dict().items())
  _report('exported state dict, loaded strict', diff, failures, 0.0)
  return model


def check_classifier(torch, models, arch, pretrained, workdir, failures):
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  from mixmae_jax.evaluation import pretrained as pretrained_lib  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks import classifier  # pylint: disable=import-outside-toplevel
  window = ARCHS[arch][4]
  model = official_swin(models, arch, 224, window, 10, pretraining=False)
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/ft.pth')
  assert convert.main([f'{workdir}/ft.pth', f'{workdir}/ft', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/ft')
  x = torch.randn(2, 3, 224, 224)
  with torch.no_grad():
    logits = model(x)
  mine = ours.apply({'params': params}, _nhwc(x))
  print(f'{arch} classifier ({ours.config.encoder.img_size} px, windows '
        f'{ours.config.encoder.window_sizes}): logits of order {float(logits.abs().max()):.2f}')
  _report('fine-tuned logits', float(np.abs(np.asarray(mine) - logits.numpy()).max()), failures)

  # Fine-tuning start at the pretraining size: the official load against ours.
  start = official_swin(models, arch, 192, ARCHS[arch][3], 10, pretraining=False)
  state = {k[len('encoder.'):]: v for k, v in pretrained.state_dict().items()
           if k.startswith('encoder.') and 'relative_position_index' not in k and
           'attn_mask' not in k}
  missing = start.load_state_dict(state, strict=False).missing_keys
  with torch.no_grad():
    start.head.weight.copy_(torch.tensor(np.asarray(params['head']['kernel']).T))
    start.head.bias.copy_(torch.tensor(np.asarray(params['head']['bias'])))
    x = torch.randn(2, 3, 192, 192)
    logits = start(x)
  wanted = dataclasses.replace(ours.config.encoder, img_size=192,
                               window_sizes=(ARCHS[arch][3],) * 4)
  encoder, config = pretrained_lib.load_encoder(f'{workdir}/pre', wanted)
  mine = classifier.Classifier(classifier.ClassifierConfig(config, 10)).apply(
      {'params': {**encoder, 'head': params['head']}}, _nhwc(x))
  print(f'  official fine-tuning start: missing keys '
        f'{sorted(k for k in missing if "attn_mask" not in k and "index" not in k)}')
  _report('fine-tuning start logits', float(np.abs(np.asarray(mine) - logits.numpy()).max()),
          failures)


def check_ummae_variant(torch, ummae_repo, failures):
  """UM-MAE's SimMIM baseline (its Swin-T at 256/W16, 16 px units, ratio 0.75)."""
  from mixmae_jax import architectures  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import pytorch_names  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks import ummae_swin  # pylint: disable=import-outside-toplevel
  from mixmae_jax.objectives import simmim  # pylint: disable=import-outside-toplevel
  np.float = float  # the official code predates NumPy 1.24
  import timm.models.vision_transformer as vt  # pylint: disable=import-outside-toplevel

  class Block(vt.Block):
    def __init__(self, *args, qk_scale=None, **kwargs):
      del qk_scale
      super().__init__(*args, **kwargs)

  vt.Block = Block
  sys.path.insert(0, os.path.abspath(ummae_repo))
  official = importlib.import_module('models_simmim_swin')
  mask_transform = importlib.import_module('mask_transform')
  model = official.simmim_swin_tiny_256().eval()
  _perturb(torch, model)
  arch = simmim.SimMIMConfig(encoder=ummae_swin.config('tiny', window_size=16), unit_size=16,
                             mask_ratio=0.75, decoder='linear')
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  params = pytorch_names.params_from_state_dict(state, arch)
  np.random.seed(1)
  generator = mask_transform.RandomMaskingGenerator(16, 0.75, regular=False)
  mask = torch.tensor(np.stack([generator() for _ in range(2)])).to(torch.bool)
  x = torch.randn(2, 3, 256, 256)
  with torch.no_grad():
    loss, pred, _ = model(x, mask)
  units = mask.numpy().reshape(2, 16, 16).astype(np.int32)
  out = architectures.build_model(arch).apply({'params': params}, _nhwc(x), mask=units)
  patches = np.asarray(out['pred']).reshape(2, 16, 16, 16, 16, 3).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(2, 256, 768)
  print(f'UM-MAE\'s SimMIM (Swin-T 256/W16): official loss {loss.item():.8f}, ours '
        f'{float(out["loss"]):.8f}')
  _report('loss (relative)', abs(float(out['loss']) / loss.item() - 1), failures)
  scale = float(np.abs(pred.numpy()).max())
  print(f'  predicted patches of order {scale:.1f}')
  _report('predicted patches (relative to their largest)',
          float(np.abs(patches - pred.numpy()).max()) / scale, failures)


def _module_from_file(path):
  """A module from its file alone (the official `data/__init__.py` imports a timm helper that
  newer timm no longer has; the mask generator needs none of it)."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--official_repo', required=True, help='a checkout of microsoft/SimMIM')
  parser.add_argument('--ummae_repo', default='', help='a checkout of implus/UM-MAE (optional)')
  parser.add_argument('--arch', nargs='+', default=['simmim_swin_base'], choices=sorted(ARCHS))
  args = parser.parse_args(argv)
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.abspath(args.official_repo))
  models = {'simmim': importlib.import_module('models.simmim'),
            'swin_transformer': importlib.import_module('models.swin_transformer'),
            'data_simmim': _module_from_file(os.path.join(args.official_repo, 'data',
                                                          'data_simmim.py'))}
  torch.manual_seed(0)
  failures = []
  for arch in args.arch:
    with tempfile.TemporaryDirectory() as workdir:
      pretrained = check_pretraining(torch, models, arch, workdir, failures)
      check_classifier(torch, models, arch, pretrained, workdir, failures)
  if args.ummae_repo:
    check_ummae_variant(torch, args.ummae_repo, failures)
  print('FAILED: ' + ', '.join(failures) if failures else 'all checks passed')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
