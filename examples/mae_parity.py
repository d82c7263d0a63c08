"""Check converted MAE checkpoints against the official PyTorch MAE code, number for number.

  python examples/mae_parity.py --official_repo /path/to/mae [--arch mae_vit_base_patch16]

Needs torch and timm (the official code imports timm) and a checkout of facebookresearch/mae (its
`models_mae.py`, `models_vit.py` and `util/pos_embed.py` are imported from there, not copied).
The official code was written for timm 0.3; with a newer timm its `Block(..., qk_scale=None)` is
given a Block that drops that argument, and classifiers are run as `head(forward_features(x))`.
Builds official models with random weights, saves them as .pth, converts them with
`mixmae_jax.convert`, and compares:
  1. pretraining (norm-pix): the loss and every image's predicted patches under the same mask
     (the official code feeds the visible patches in a random order; we feed them in raster order);
  2. the exported state dict loads back into the official class with strict=True, unchanged;
  3. the encoder alone (`mae_pretrain_vit_base.pth`-style): the cls feature of MAE's linear probe;
  4. a fine-tuned classifier's logits (global pool + fc_norm);
  5. fine-tuning at 256 from the 224 pretraining checkpoint the official way (interpolate_pos_embed,
     strict=False) against ours (`evaluation.pretrained.load_encoder`), on logits.
Prints the largest absolute differences; exits non-zero if any exceeds 1e-4.
"""
import argparse
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np


def _perturb(torch, model):
  """Biases, norms and the tokens start at 0/1 in both codes; move them so the check means
  something."""
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad and (p.ndim == 1 or tuple(p.shape[:2]) == (1, 1)):
        p.add_(0.1 * torch.randn_like(p))


def _nhwc(x):
  return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _accept_qk_scale():
  """timm >= 0.4 dropped Block's qk_scale argument, which models_mae.py still passes."""
  import timm.models.vision_transformer as vt  # pylint: disable=import-outside-toplevel

  class Block(vt.Block):
    def __init__(self, *args, qk_scale=None, **kwargs):
      del qk_scale
      super().__init__(*args, **kwargs)

  vt.Block = Block


def check_pretraining(torch, official, convert, load, arch, workdir):
  model = getattr(official, arch)(norm_pix_loss=True).eval()
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/pre.pth')
  assert convert.main([f'{workdir}/pre.pth', f'{workdir}/pre', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/pre')
  x = torch.randn(4, 3, 224, 224)
  length = ours.config.encoder.num_patches
  noise = torch.rand(4, length)

  def fixed_masking(self, tokens, ratio):  # the official draw from our noise
    n, length, d = tokens.shape
    keep = int(length * (1 - ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].repeat(1, 1, d))
    mask = torch.ones(n, length)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore

  official.MaskedAutoencoderViT.random_masking = fixed_masking
  with torch.no_grad():
    loss, pred, mask = model(x, mask_ratio=0.75)
  out = ours.apply({'params': params}, _nhwc(x), mask=mask.numpy().astype(np.int32))
  assert convert.main([f'{workdir}/pre', f'{workdir}/back.pth']) == 0
  back = torch.load(f'{workdir}/back.pth', weights_only=True)['model']
  getattr(official, arch)().load_state_dict(back, strict=True)
  return {'pretraining loss': abs(loss.item() - float(out['loss'])),
          'pretraining predictions': float(np.abs(pred.numpy() - np.asarray(out['pred'])).max()),
          'export round trip': max(float((back[k].float() - v.float()).abs().max())
                                   for k, v in model.state_dict().items())}, model


def _logits(torch, model, x):
  with torch.no_grad():
    return model.head(model.forward_features(x)).numpy()


def check_encoder(torch, official_vit, convert, load, arch, pretrained, workdir):
  """The released encoder-only files hold the pretraining model's encoder keys."""
  encoder_keys = {k: v for k, v in pretrained.state_dict().items()
                  if not k.startswith(('decoder', 'mask_token'))}
  torch.save({'model': encoder_keys}, f'{workdir}/enc.pth')
  assert convert.main([f'{workdir}/enc.pth', f'{workdir}/enc', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/enc')
  model = getattr(official_vit, arch.replace('mae_', ''))(global_pool=False).eval()
  model.load_state_dict(encoder_keys, strict=False)  # head stays as drawn; we compare features
  x = torch.randn(2, 3, 224, 224)
  with torch.no_grad():
    expected = model.forward_features(x).numpy()
  got = ours.apply({'params': params}, _nhwc(x), method=type(ours).features)
  return float(np.abs(expected - np.asarray(got)).max())


def check_classifier(torch, official_vit, convert, load, arch, workdir):
  model = getattr(official_vit, arch.replace('mae_', ''))(num_classes=10, global_pool=True).eval()
  _perturb(torch, model)
  torch.save({'model': model.state_dict()}, f'{workdir}/ft.pth')
  assert convert.main([f'{workdir}/ft.pth', f'{workdir}/ft', '--arch', arch]) == 0
  ours, params = load(f'{workdir}/ft')
  x = torch.randn(2, 3, 224, 224)
  return float(np.abs(_logits(torch, model, x) -
                      np.asarray(ours.apply({'params': params}, _nhwc(x)))).max())


def check_finetune_init(torch, official_vit, interpolate_pos_embed, arch, pretrained, workdir):
  """main_finetune.py's loading at 256 px against ours, heads set equal."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from mixmae_jax.evaluation import pretrained as ours_pretrained  # pylint: disable=C0415
  from mixmae_jax.networks import vit  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks.classifier import Classifier, ClassifierConfig  # pylint: disable=C0415
  model = getattr(official_vit, arch.replace('mae_', ''))(num_classes=10, global_pool=True,
                                                          img_size=256).eval()
  checkpoint = {k: v for k, v in pretrained.state_dict().items()
                if not k.startswith(('decoder', 'mask_token'))}
  interpolate_pos_embed(model, checkpoint)
  model.load_state_dict(checkpoint, strict=False)
  _perturb(torch, model.fc_norm)
  _perturb(torch, model.head)
  wanted = dataclasses.replace(vit.config(arch.split('_')[2]), img_size=256, pos_embed='learned')
  encoder_params, encoder = ours_pretrained.load_encoder(f'{workdir}/pre', wanted)
  classifier = Classifier(ClassifierConfig(encoder, num_classes=10))
  fresh = classifier.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)))['params']
  params = ours_pretrained.merge_encoder(dict(fresh), encoder_params)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  params['fc_norm'] = {'scale': sd['fc_norm.weight'], 'bias': sd['fc_norm.bias']}
  params['head'] = {'kernel': sd['head.weight'].T, 'bias': sd['head.bias']}
  x = torch.randn(2, 3, 256, 256)
  return float(np.abs(_logits(torch, model, x) -
                      np.asarray(classifier.apply({'params': params}, _nhwc(x)))).max())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--official_repo', required=True, help='checkout of facebookresearch/mae')
  parser.add_argument('--arch', default='mae_vit_base_patch16',
                      choices=['mae_vit_base_patch16', 'mae_vit_large_patch16'])
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.abspath(args.official_repo))
  if not hasattr(np, 'float'):  # the official util/pos_embed.py uses this removed numpy alias
    np.float = float
  import torch  # pylint: disable=import-outside-toplevel
  _accept_qk_scale()
  import models_mae as official  # pylint: disable=import-outside-toplevel,import-error
  import models_vit as official_vit  # pylint: disable=import-outside-toplevel,import-error
  from util.pos_embed import interpolate_pos_embed  # pylint: disable=C0415,import-error
  from mixmae_jax import load  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import convert  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as workdir:
    diffs, pretrained = check_pretraining(torch, official, convert, load, args.arch, workdir)
    diffs['encoder alone: cls feature'] = check_encoder(torch, official_vit, convert, load,
                                                        args.arch, pretrained, workdir)
    diffs['classifier logits'] = check_classifier(torch, official_vit, convert, load, args.arch,
                                                  workdir)
    diffs['fine-tuning init at 256, logits'] = check_finetune_init(
        torch, official_vit, interpolate_pos_embed, args.arch, pretrained, workdir)
  for name, value in diffs.items():
    print(f'{name:36s} max |difference| {value:.2e}')
  return 0 if max(diffs.values()) < 1e-4 else 1


if __name__ == '__main__':
  sys.exit(main())
