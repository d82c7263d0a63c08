"""Check converted UM-MAE checkpoints against the official PyTorch UM-MAE code, number for number.

  python examples/ummae_parity.py --official_repo /path/to/UM-MAE \
      [--arch ummae_swin_tiny ummae_pvt_small ummae_swin_large]

Needs torch and timm and a checkout of implus/UM-MAE (its `models_mae_swin.py`,
`models_mae_pvt.py`, `models_swin.py`, `models_pvt.py` and `mask_transform.py` are imported from
there, not copied). The official code was written for timm 0.3 and NumPy < 1.24: with newer ones
its `Block(..., qk_scale=None)` is given a Block that drops that argument and `np.float` is
aliased to `float` before it is imported. Builds official models with random weights (biases,
norms and tokens moved off their 0/1 init), saves them as .pth, converts them with
`mixmae_jax.convert`, and compares:
  1. pretraining on the same masks (the official balanced-pool uniform mask, and the secondary
     mask the official code draws from torch.rand, which is replayed): the loss, the predictions
     at the hidden units and at the shown units, with `decoder_pos_order='official'`;
  2. `decoder_pos_order='correct'` against the official model whose decoder is given each shown
     token's own unit position (the only change), and how far the two orders' losses lie apart;
  3. the exported state dict loads back into the official class with strict=True, unchanged;
  4. a fine-tuned classifier's logits (window 16 / sr 8, 4, 2, 1 on the full 256 grid);
  5. fine-tuning from the pretraining checkpoint the official way (load_state_dict,
     strict=False) against ours (`evaluation.pretrained.load_encoder`), on logits.
Prints the largest absolute differences; exits non-zero if any exceeds the tolerance (1e-4 on
values of order 1, relative 1e-4 on the loss).
"""
import argparse
import os
import sys
import tempfile

import jax.numpy as jnp
import numpy as np

ARCHS = {  # our --arch name: (official pretraining, official classifier)
    'ummae_swin_tiny': ('models_mae_swin', 'mae_swin_tiny_256', 'models_swin', 'swin_tiny_256'),
    'ummae_pvt_small': ('models_mae_pvt', 'mae_pvt_small_256', 'models_pvt', 'pvt_small_256'),
    'ummae_swin_large': ('models_mae_swin', 'mae_swin_large_256', 'models_swin',
                         'swin_large_256'),
}
TOLERANCE = 1e-4


def _compatibility_shims():
  """timm >= 0.4 dropped Block's qk_scale; NumPy >= 1.24 dropped np.float."""
  np.float = float  # pylint: disable=attribute-defined-outside-init
  import timm.models.vision_transformer as vt  # pylint: disable=import-outside-toplevel

  class Block(vt.Block):
    def __init__(self, *args, qk_scale=None, **kwargs):
      del qk_scale
      super().__init__(*args, **kwargs)

  vt.Block = Block


def _perturb(torch, model):
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 1 or tuple(p.shape[:2]) == (1, 1) and p.ndim == 3:
        p.add_(0.1 * torch.randn_like(p))


def _nhwc(x):
  return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _report(name, diff, failures, tolerance=TOLERANCE):
  print(f'  {name}: max |diff| {diff:.3g}')
  if not diff <= tolerance:
    failures.append(name)


def official_masks(torch, mask_transform, batch, grid, seed):
  """The official balanced-pool masks [B, g*g] (bool, 1 = hidden) and the noise its encoder
  will draw for secondary masking (replayed by re-seeding torch before the forward pass)."""
  np.random.seed(seed)
  generator = mask_transform.RandomMaskingGenerator(grid, 0.75, regular=True)
  mask = torch.tensor(np.stack([generator() for _ in range(batch)])).to(torch.bool)
  torch.manual_seed(seed)
  noise = torch.rand(batch, grid * grid)
  return mask, noise


def secondary_from_noise(mask, noise, kept):
  """The secondary mask the official forward_encoder derives from mask + noise."""
  order = np.argsort((mask.float() + noise).numpy(), axis=1, kind='stable')
  ranks = np.argsort(order, axis=1)
  return ((ranks >= kept) & ~mask.numpy()).astype(np.int32)


def check_pretraining(torch, repo_modules, names, arch, workdir, failures):
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  from mixmae_jax.objectives import uniform_masking  # pylint: disable=import-outside-toplevel
  official = repo_modules[names[0]]
  model = getattr(official, names[1])(norm_pix_loss=True, vis_mask_ratio=0.25).eval()
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/pre.pth')
  assert convert.main([f'{workdir}/pre.pth', f'{workdir}/pre', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/pre')
  batch, grid = 2, 16
  mask, noise = official_masks(torch, repo_modules['mask_transform'], batch, grid, seed=3)
  secondary = secondary_from_noise(mask, noise, uniform_masking.num_secondary_kept(grid, 0.25))
  secondary = secondary.reshape(batch, grid, grid)
  x = torch.randn(batch, 3, 256, 256)
  torch.manual_seed(3)  # the encoder's torch.rand(N, L) now replays `noise`
  with torch.no_grad():
    loss, pred, _ = model(x, mask)
  hidden = mask.numpy().reshape(batch, grid, grid).astype(np.int32)
  out = ours.apply({'params': params}, _nhwc(x), mask=hidden, secondary=secondary)
  print(f'{arch} pretraining: official loss {loss.item():.8f}, ours {float(out["loss"]):.8f}')
  _report('loss (relative)', abs(float(out['loss']) / loss.item() - 1), failures)
  _report('pred at hidden units', float(np.abs(np.asarray(out['pred']) -
                                               pred[:, -192:].numpy()).max()), failures)
  _report('pred at shown units', float(np.abs(np.asarray(out['pred_visible']) -
                                              pred[:, :64].numpy()).max()), failures)

  # The corrected order against the official model given each token's own unit position.
  units = np.asarray(uniform_masking.visible_units(jnp.asarray(hidden)))
  raw = model.forward_decoder

  def own_positions(latent, m):
    """The official decoder, one sample at a time, with the table rows it reads for the shown
    tokens (raster order) holding each token's own unit (group order)."""
    table = model.decoder_pos_embed.data
    saved = table.clone()
    outs = []
    for b in range(batch):
      table[0, torch.tensor(np.sort(units[b]))] = saved[0, torch.tensor(units[b])]
      outs.append(raw(latent[b:b + 1], m[b:b + 1]))
      table.copy_(saved)
    return torch.cat([o[0] for o in outs]), outs[0][1]

  model.forward_decoder = own_positions
  torch.manual_seed(3)
  with torch.no_grad():
    loss_own, pred_own, _ = model(x, mask)
  model.forward_decoder = raw
  corrected = load_with_order(f'{workdir}/pre', 'correct')
  out_c = corrected[0].apply({'params': corrected[1]}, _nhwc(x), mask=hidden, secondary=secondary)
  _report('correct order: pred at hidden units', float(np.abs(np.asarray(out_c['pred']) -
                                                              pred_own[:, -192:].numpy()).max()),
          failures)
  _report('correct order: loss (relative)', abs(float(out_c['loss']) / loss_own.item() - 1),
          failures)
  moved = np.mean(units != np.sort(units, axis=1))
  print(f'  the official order gives {100 * moved:.0f}% of the shown tokens another unit\'s '
        f'position; losses: official order {float(out["loss"]):.5f}, correct '
        f'{float(out_c["loss"]):.5f}')

  assert convert.main([f'{workdir}/pre', f'{workdir}/back.pth']) == 0
  back = torch.load(f'{workdir}/back.pth', weights_only=True)['model']
  again = getattr(official, names[1])(norm_pix_loss=True, vis_mask_ratio=0.25)
  again.load_state_dict(back, strict=True)
  diff = max(float((again.state_dict()[k].float() - v.float()).abs().max())
             for k, v in model.state_dict().items())
  _report('exported state dict, loaded strict', diff, failures, 0.0)
  return model


def load_with_order(path, order):
  """A converted pretraining checkpoint under the other decoder position order."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from mixmae_jax import architectures, load  # pylint: disable=import-outside-toplevel
  model, params = load(path)
  return architectures.build_model(dataclasses.replace(model.config, decoder_pos_order=order)), \
      params


def check_classifier(torch, repo_modules, names, arch, pretrained, workdir, failures):
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  from mixmae_jax.evaluation import pretrained as pretrained_lib  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks.classifier import Classifier  # pylint: disable=import-outside-toplevel
  official = repo_modules[names[2]]
  model = getattr(official, names[3])(num_classes=10).eval()
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/ft.pth')
  assert convert.main([f'{workdir}/ft.pth', f'{workdir}/ft', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/ft')
  x = torch.randn(2, 3, 256, 256)
  with torch.no_grad():
    logits = model(x)
  mine = ours.apply({'params': params}, _nhwc(x))
  print(f'{arch} classifier: logits of order {float(logits.abs().max()):.2f}')
  _report('fine-tuned logits', float(np.abs(np.asarray(mine) - logits.numpy()).max()), failures)

  # Fine-tuning from the pretraining model: the official load (strict=False) against ours.
  start = getattr(official, names[3])(num_classes=10).eval()
  state = {k: v for k, v in pretrained.state_dict().items()}
  missing = start.load_state_dict(state, strict=False).missing_keys
  with torch.no_grad():
    start.fc_norm.weight.copy_(torch.tensor(np.asarray(params['fc_norm']['scale'])))
    start.fc_norm.bias.copy_(torch.tensor(np.asarray(params['fc_norm']['bias'])))
    start.head.weight.copy_(torch.tensor(np.asarray(params['head']['kernel']).T))
    start.head.bias.copy_(torch.tensor(np.asarray(params['head']['bias'])))
    logits = start(x)
  encoder, config = pretrained_lib.load_encoder(f'{workdir}/pre', ours.config.encoder)
  merged = pretrained_lib.merge_encoder(dict(params), encoder)
  mine = Classifier(ours.config.__class__(encoder=config, num_classes=10)).apply(
      {'params': merged}, _nhwc(x))
  print(f'  official fine-tuning start: missing keys {sorted(missing)}')
  _report('fine-tuning start logits', float(np.abs(np.asarray(mine) - logits.numpy()).max()),
          failures)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--official_repo', required=True, help='a checkout of implus/UM-MAE')
  parser.add_argument('--arch', nargs='+', default=['ummae_swin_tiny', 'ummae_pvt_small'],
                      choices=sorted(ARCHS))
  args = parser.parse_args(argv)
  import torch  # pylint: disable=import-outside-toplevel
  _compatibility_shims()
  sys.path.insert(0, os.path.abspath(args.official_repo))
  import importlib  # pylint: disable=import-outside-toplevel
  repo_modules = {name: importlib.import_module(name) for name in
                  ('mask_transform', 'models_mae_swin', 'models_mae_pvt', 'models_swin',
                   'models_pvt')}
  torch.manual_seed(0)
  failures = []
  for arch in args.arch:
    with tempfile.TemporaryDirectory() as workdir:
      names = ARCHS[arch]
      pretrained = check_pretraining(torch, repo_modules, names, arch, workdir, failures)
      check_classifier(torch, repo_modules, names, arch, pretrained, workdir, failures)
  print('FAILED: ' + ', '.join(failures) if failures else 'all checks passed')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
