"""Check converted checkpoints against the official PyTorch MixMIM code, number for number.

  python examples/official_parity.py --official_repo /path/to/MixMIM [--arch mixmim_base]

Needs torch and timm (the official code imports timm) and a checkout of the official repository
(its `models_mixmim.py`, `models_mixmim_ft.py` and `util/pos_embed.py` are imported from there,
not copied). Builds official models with random weights, saves them as .pth, converts them with
`mixmae_jax.convert`, and compares:
  1. pretraining: the loss and every image's predicted patches under the same mask;
  2. the exported state dict loads back into the official class with strict=True, unchanged;
  3. a fine-tuned 224 classifier's logits;
  4. a 384 classifier initialised from the 224 checkpoint the official way (bicubic position
     table and bias-table interpolation), converted and compared on logits.
Prints the largest absolute differences; exits non-zero if any exceeds 1e-4.
"""
import argparse
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np


def _perturb_vectors(torch, model):
  """Biases and norms start at 0/1 in both codes; move them so the check means something."""
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad and p.ndim == 1:
        p.add_(0.1 * torch.randn_like(p))


def _nhwc(x):
  return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def check_pretraining(torch, official, convert, load, arch, workdir):
  model = getattr(official, arch)().eval()
  _perturb_vectors(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/pre.pth')
  assert convert.main([f'{workdir}/pre.pth', f'{workdir}/pre', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/pre')
  grid = ours.config.encoder.img_size // 32
  mask = np.zeros(grid * grid, np.float32)
  mask[np.random.default_rng(0).permutation(grid * grid)[:int(grid * grid * 0.5)]] = 1
  unit = torch.tensor(mask).reshape(1, 1, grid, grid)

  def fixed_masking(self, x, ratio):  # the official draw, replaced by our mask
    del self, x, ratio
    ups = [torch.nn.functional.interpolate(unit, scale_factor=f, mode='nearest') for f in (8, 4, 2)]
    return tuple(u.reshape(1, -1, 1) for u in ups) + (unit.reshape(1, -1, 1),)

  official.MixMIM.random_masking = fixed_masking
  x = torch.randn(4, 3, 224, 224)
  with torch.no_grad():
    loss, rec, _ = model(x)
  m = unit.reshape(1, -1, 1)
  pred = (rec[:4] * m + rec[4:].flip(0) * (1 - m)).numpy()
  out = ours.apply({'params': params}, _nhwc(x), mask=mask.reshape(grid, grid))
  assert convert.main([f'{workdir}/pre', f'{workdir}/back.pth']) == 0
  back = torch.load(f'{workdir}/back.pth', weights_only=True)['model']
  getattr(official, arch)().load_state_dict(back, strict=True)
  return {'pretraining loss': abs(loss.item() - float(out['loss'])),
          'pretraining predictions': float(np.abs(pred - np.asarray(out['pred'])).max()),
          'export round trip': max(float((back[k].float() - v.float()).abs().max())
                                   for k, v in model.state_dict().items())}, model


def check_classifier(torch, official_ft, convert, load, name, arch, state, workdir, size):
  model = getattr(official_ft, name)(num_classes=10).eval()
  if state is not None:
    model.load_state_dict(state, strict=False)
  else:
    _perturb_vectors(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/{name}.pth')
  assert convert.main([f'{workdir}/{name}.pth', f'{workdir}/{name}', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/{name}')
  x = torch.randn(2, 3, size, size)
  with torch.no_grad():
    expected = model(x).numpy()
  return float(np.abs(expected - np.asarray(ours.apply({'params': params}, _nhwc(x)))).max())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--official_repo', required=True, help='checkout of the official code')
  parser.add_argument('--arch', default='mixmim_base', choices=['mixmim_base', 'mixmim_large'])
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.abspath(args.official_repo))
  if not hasattr(np, 'float'):  # the official util/pos_embed.py uses this removed numpy alias
    np.float = float
  import torch  # pylint: disable=import-outside-toplevel
  import models_mixmim as official  # pylint: disable=import-outside-toplevel,import-error
  import models_mixmim_ft as official_ft  # pylint: disable=import-outside-toplevel,import-error
  from util.pos_embed import interpolate_pos_embed  # pylint: disable=C0415,import-error
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as workdir:
    diffs, pretrained = check_pretraining(torch, official, convert, load, args.arch, workdir)
    diffs['classifier 224 logits'] = check_classifier(
        torch, official_ft, convert, load, args.arch, args.arch, None, workdir, 224)
    model_384 = getattr(official_ft, f'{args.arch}_384')(num_classes=10)
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    interpolate_pos_embed(model_384, state)
    diffs['classifier 384 logits (from 224)'] = check_classifier(
        torch, official_ft, convert, load, f'{args.arch}_384', args.arch, state, workdir, 384)
  for name, value in diffs.items():
    print(f'{name:36s} max |difference| {value:.2e}')
  return 0 if max(diffs.values()) < 1e-4 else 1


if __name__ == '__main__':
  sys.exit(main())
