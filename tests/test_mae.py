"""MAE on ViT: the masking law, official names, the loss and predictions against an independent
PyTorch computation of the official model, and official checkpoints in and out.

The PyTorch reference below is written from MAE's `models_mae.py` / `models_vit.py` semantics
(timm blocks, MAE's noise-order shuffling of the visible tokens), not from our Flax code; the
tests that use it skip without torch.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixmae_jax
from mixmae_jax import architectures
from mixmae_jax.evaluation import pretrained
from mixmae_jax.interop import convert, pytorch_names
from mixmae_jax.networks import resolution, vit
from mixmae_jax.networks.classifier import Classifier, ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives import mae

ENCODER = vit.config('tiny', img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
ARCH = mae.MAEConfig(encoder=ENCODER, decoder=DecoderConfig(dim=24, depth=2, num_heads=3,
                                                            norm_eps=1e-6))
L, KEPT = 16, 4  # (32 / 8)^2 patches, int(16 x 0.25) visible


def _random_params(arch, seed=0, scale=0.3):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _images(batch, seed=1, size=32):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def test_masks_keep_exactly_a_quarter_of_each_image_independently():
  masks = np.asarray(mae.random_masking(jax.random.PRNGKey(0), 64, 196, 49))
  assert masks.dtype == np.int32 and masks.shape == (64, 196)
  assert np.all(masks.sum(axis=1) == 196 - 49)
  assert len({m.tobytes() for m in masks}) == 64  # per image, not per batch
  again = np.asarray(mae.random_masking(jax.random.PRNGKey(0), 64, 196, 49))
  np.testing.assert_array_equal(masks, again)
  # every position is removed about 75% of the time over many draws
  many = np.asarray(mae.random_masking(jax.random.PRNGKey(1), 4000, 16, 4))
  np.testing.assert_allclose(many.mean(axis=0), 0.75, atol=0.04)
  assert mae.MAEConfig().num_kept == 49


def test_official_parameter_names_and_no_classifier_norms():
  params = architectures.abstract_params(architectures.build_model(ARCH))
  assert set(params) == {'patch_embed', 'cls_token', 'blocks_0', 'blocks_1', 'norm', 'mask_token',
                         'decoder_embed', 'decoder_blocks_0', 'decoder_blocks_1', 'decoder_norm',
                         'decoder_pred'}
  assert params['patch_embed']['proj']['kernel'].shape == (8, 8, 3, 32)
  assert set(params['blocks_0']) == {'norm1', 'attn', 'norm2', 'mlp'}
  assert params['decoder_pred']['kernel'].shape == (24, 8 * 8 * 3)


def test_vit_b16_has_the_published_parameter_count():
  """ViT-B/16 with a 1000-class head and a learned position table: 86.57M (timm, DeiT)."""
  arch = ClassifierConfig(vit.config('base', pos_embed='learned'), 1000)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      architectures.abstract_params(architectures.build_model(arch))))
  assert count == 86_567_656


def test_an_explicit_mask_must_remove_the_right_count():
  model = architectures.build_model(ARCH)
  params = _random_params(ARCH)
  images = _images(2)
  bad = np.zeros((2, L), np.int32)
  bad[:, :11] = 1  # 11 removed instead of 12
  with pytest.raises(ValueError, match='exactly 12 ones'):
    model.apply({'params': params}, images, mask=bad)
  out = model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(3)})
  assert out['pred'].shape == (2, L, 192) and np.all(np.asarray(out['mask']).sum(1) == 12)


# ---------------- an independent PyTorch computation of the official model ----------------

def _torch_block(torch, x, sd, prefix, heads, eps):
  """timm's `Block`: pre-norm attention (fused qkv) and MLP (exact GELU)."""
  F = torch.nn.functional
  b, n, c = x.shape
  h = F.layer_norm(x, (c,), sd[prefix + 'norm1.weight'], sd[prefix + 'norm1.bias'], eps)
  qkv = F.linear(h, sd[prefix + 'attn.qkv.weight'], sd[prefix + 'attn.qkv.bias'])
  q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
  attn = ((q @ k.transpose(-2, -1)) * (c // heads)**-0.5).softmax(dim=-1)
  h = (attn @ v).transpose(1, 2).reshape(b, n, c)
  x = x + F.linear(h, sd[prefix + 'attn.proj.weight'], sd[prefix + 'attn.proj.bias'])
  h = F.layer_norm(x, (c,), sd[prefix + 'norm2.weight'], sd[prefix + 'norm2.bias'], eps)
  h = F.linear(F.gelu(F.linear(h, sd[prefix + 'mlp.fc1.weight'], sd[prefix + 'mlp.fc1.bias'])),
               sd[prefix + 'mlp.fc2.weight'], sd[prefix + 'mlp.fc2.bias'])
  return x + h


def _torch_embed(torch, sd, imgs, patch):
  x = torch.nn.functional.conv2d(imgs, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                                 stride=patch)
  return x.flatten(2).transpose(1, 2)


def _torch_mae(torch, sd, images_nhwc, mask, arch, seed=0):
  """MaskedAutoencoderViT.forward with the visible tokens in MAE's noise order."""
  F = torch.nn.functional
  enc, dec = arch.encoder, arch.decoder
  imgs = torch.tensor(images_nhwc).permute(0, 3, 1, 2)
  n, length = mask.shape
  rng = np.random.default_rng(seed)  # kept first, each part in a random order, as argsort(noise)
  shuffle = np.stack([np.concatenate([rng.permutation(np.flatnonzero(m == 0)),
                                      rng.permutation(np.flatnonzero(m == 1))]) for m in mask])
  ids_shuffle = torch.tensor(shuffle)
  ids_restore = torch.argsort(ids_shuffle, dim=1)
  keep = arch.num_kept
  x = _torch_embed(torch, sd, imgs, enc.patch_size) + sd['pos_embed'][:, 1:]
  x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
  cls = sd['cls_token'] + sd['pos_embed'][:, :1]
  x = torch.cat([cls.expand(n, -1, -1), x], dim=1)
  for i in range(enc.depth):
    x = _torch_block(torch, x, sd, f'blocks.{i}.', enc.num_heads, 1e-6)
  x = F.layer_norm(x, (enc.embed_dim,), sd['norm.weight'], sd['norm.bias'], 1e-6)
  x = F.linear(x, sd['decoder_embed.weight'], sd['decoder_embed.bias'])
  tokens = sd['mask_token'].repeat(n, length + 1 - x.shape[1], 1)
  x_ = torch.cat([x[:, 1:], tokens], dim=1)
  x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
  x = torch.cat([x[:, :1], x_], dim=1) + sd['decoder_pos_embed']
  for i in range(dec.depth):
    x = _torch_block(torch, x, sd, f'decoder_blocks.{i}.', dec.num_heads, 1e-6)
  x = F.layer_norm(x, (dec.dim,), sd['decoder_norm.weight'], sd['decoder_norm.bias'], 1e-6)
  pred = F.linear(x, sd['decoder_pred.weight'], sd['decoder_pred.bias'])[:, 1:]
  p, g = enc.patch_size, enc.grid
  target = imgs.reshape(n, 3, g, p, g, p)
  target = torch.einsum('nchpwq->nhwpqc', target).reshape(n, g * g, p * p * 3)
  mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
  target = (target - mean) / (var + 1e-6)**0.5
  per_patch = ((pred - target)**2).mean(dim=-1)
  m = torch.tensor(mask, dtype=torch.float32)
  return (per_patch * m).sum() / m.sum(), pred


def _torch_vit_classifier(torch, sd, images_nhwc, encoder):
  """models_vit.VisionTransformer with global_pool: mean patch token, fc_norm, head."""
  F = torch.nn.functional
  imgs = torch.tensor(images_nhwc).permute(0, 3, 1, 2)
  x = _torch_embed(torch, sd, imgs, encoder.patch_size)
  x = torch.cat([sd['cls_token'].expand(x.shape[0], -1, -1), x], dim=1) + sd['pos_embed']
  for i in range(encoder.depth):
    x = _torch_block(torch, x, sd, f'blocks.{i}.', encoder.num_heads, 1e-6)
  x = F.layer_norm(x[:, 1:].mean(dim=1), (encoder.embed_dim,), sd['fc_norm.weight'],
                   sd['fc_norm.bias'], 1e-6)
  return F.linear(x, sd['head.weight'], sd['head.bias'])


@pytest.fixture
def torch():
  return pytest.importorskip('torch')


def _save(torch, path, state_dict):
  torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}}, path)


def _official(arch, seed=0):
  """A randomly initialised official-format state dict (buffers are the official sin-cos)."""
  return pytorch_names.state_dict_from_params(_random_params(arch, seed), arch)


def test_an_official_state_dict_gives_the_official_loss_and_predictions(torch):
  """A random official-format state dict (the official sin-cos buffers included) read into our
  model: the same loss and every image's predictions as the official computation under the same
  mask, although the official code feeds the visible tokens in a random order."""
  state_dict = _official(ARCH)
  assert state_dict['pos_embed'].shape == (1, L + 1, 32)
  assert state_dict['decoder_pos_embed'].shape == (1, L + 1, 24)
  convert.check_keys(state_dict, ARCH)
  params = pytorch_names.params_from_state_dict(state_dict, ARCH)
  model = architectures.build_model(ARCH)
  images = _images(3)
  rng = np.random.default_rng(5)
  mask = np.stack([rng.permutation(L) >= KEPT for _ in range(3)]).astype(np.int32)
  with jax.default_matmul_precision('highest'):
    out = model.apply({'params': params}, jnp.asarray(images), mask=mask)
  sd = {k: torch.tensor(v) for k, v in state_dict.items()}
  with torch.no_grad():
    loss, pred = _torch_mae(torch, sd, images, mask, ARCH)
  np.testing.assert_allclose(out['pred'], pred.numpy(), atol=2e-5)
  assert float(out['loss']) == pytest.approx(float(loss), rel=1e-5)


def test_vit_classifier_logits_match_the_official_model(torch):
  encoder = dataclasses.replace(ENCODER, pos_embed='learned', global_pool=True)
  arch = ClassifierConfig(encoder, num_classes=5)
  params = _random_params(arch, seed=2)
  state_dict = pytorch_names.state_dict_from_params(params, arch)
  assert 'fc_norm.weight' in state_dict and 'norm.weight' not in state_dict
  images = _images(4, seed=3)
  with jax.default_matmul_precision('highest'):
    logits = Classifier(arch).apply({'params': params}, jnp.asarray(images))
  with torch.no_grad():
    want = _torch_vit_classifier(torch, {k: torch.tensor(v) for k, v in state_dict.items()},
                                 images, encoder)
  np.testing.assert_allclose(logits, want.numpy(), atol=2e-5)


@pytest.mark.parametrize('kind', ['pretraining', 'encoder', 'classifier'])
def test_official_files_of_every_kind_convert_both_ways(torch, tmp_path, kind):
  encoder = vit.config('base', img_size=64)  # ViT-B/16 shapes at a small input: 4x4 patches
  arch = {'pretraining': mae.MAEConfig(encoder=encoder),
          'encoder': dataclasses.replace(encoder, global_pool=False),
          'classifier': ClassifierConfig(dataclasses.replace(encoder, pos_embed='learned'),
                                         3)}[kind]
  original = _official(arch, seed=4)
  if kind == 'encoder':
    assert not any(k.startswith(('decoder', 'head', 'fc_norm')) for k in original)
  _save(torch, tmp_path / 'in.pth', original)
  assert convert.main([str(tmp_path / 'in.pth'), str(tmp_path / 'ours'), '--arch',
                       'mae_vit_base_patch16']) == 0
  model, _ = mixmae_jax.load(str(tmp_path / 'ours'))
  assert model.config == arch
  assert convert.main([str(tmp_path / 'ours'), str(tmp_path / 'back.pth'), '--arch',
                       'mae_vit_base_patch16']) == 0
  back = torch.load(tmp_path / 'back.pth', weights_only=True)['model']
  assert set(back) == set(original)
  for k, v in original.items():
    np.testing.assert_array_equal(back[k].numpy(), v)


def test_mae_checkpoints_refuse_the_wrong_arch_and_mixmim_exports(torch, tmp_path, capsys):
  _save(torch, tmp_path / 'b.pth', _official(mae.MAEConfig(encoder=vit.config('base',
                                                                                img_size=64))))
  assert convert.main([str(tmp_path / 'b.pth'), str(tmp_path / 'o'), '--arch',
                       'mae_vit_large_patch16']) == 1
  assert 'looks like mae_vit_base_patch16' in capsys.readouterr().err
  assert convert.main([str(tmp_path / 'b.pth'), str(tmp_path / 'ours'), '--arch',
                       'mae_vit_base_patch16']) == 0
  assert convert.main([str(tmp_path / 'ours'), str(tmp_path / 'x.pth'), '--arch',
                       'mixmim_base']) == 1
  assert 'not a MixMIM one' in capsys.readouterr().err


def test_a_pretrained_mae_encoder_fine_tunes_as_maes_main_finetune_loads_it():
  """The sin-cos table becomes the learned `pos_embed`, resized bicubically to a new input
  size (MAE's interpolate_pos_embed); `norm` is left out and `fc_norm` is new (global pool)."""
  params = _random_params(ARCH)
  target = dataclasses.replace(ENCODER, img_size=48, pos_embed='learned', global_pool=True)
  moved, encoder = vit.adapt(pretrained.encoder_params(params, ENCODER), ENCODER, target)
  assert encoder == target and 'mask_token' not in moved
  table = moved['pos_embed']
  assert table.shape == (1, 1 + 36, 32)
  np.testing.assert_array_equal(table[0, 0], 0.0)  # the cls slot of MAE's table
  source = vit.sincos_table(32, 4)[0, 1:].reshape(4, 4, 32)
  np.testing.assert_allclose(table[0, 1:].reshape(6, 6, 32),
                             resolution.bicubic_resize(source, 6, 6), atol=1e-6)
  model = Classifier(ClassifierConfig(encoder, num_classes=3))
  fresh = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3)))['params']
  merged = pretrained.merge_encoder(dict(fresh), moved)
  assert 'norm' not in merged and 'fc_norm' in merged
  np.testing.assert_array_equal(merged['blocks_1']['mlp']['fc2']['kernel'],
                                params['blocks_1']['mlp']['fc2']['kernel'])
  assert model.apply({'params': merged}, jnp.zeros((2, 48, 48, 3))).shape == (2, 3)
  with pytest.raises(ValueError, match='learned pos_embed'):
    vit.adapt(moved, target, dataclasses.replace(target, pos_embed='sincos'))
