"""UM-MAE on its Swin and on PVT: official names and parameter counts, the loss and predictions
against an independent PyTorch computation (both decoder position orders), classifiers, the
loss against numpy, official checkpoints in and out, fine-tuning and evaluation of PVT.

The PyTorch reference below is written from the method's description and the official modules'
semantics (loops over groups and windows, F.pixel_shuffle, its own sin-cos table), not from our
Flax code; the tests that use it skip without torch.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixmae_jax
from mixmae_jax import architectures
from mixmae_jax.evaluation import layer_decay, pretrained
from mixmae_jax.interop import convert, pytorch_names
from mixmae_jax.networks import pvt, ummae_swin
from mixmae_jax.networks.classifier import Classifier, ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives import ummae
from mixmae_jax.objectives import uniform_masking as um

SWIN = ummae_swin.config('tiny', img_size=64, embed_dim=16, depths=(2, 1, 1, 1),
                         num_heads=(1, 2, 2, 4), window_size=4, posmlp_dim=8)
PVT = pvt.config('small', img_size=64, embed_dims=(8, 16, 32, 64), depths=(1, 2, 1, 1),
                 num_heads=(1, 2, 4, 8), sr_ratios=(4, 2, 1, 1))
DECODER = DecoderConfig(dim=16, depth=1, num_heads=2, norm_eps=1e-6)
G = 4  # 64 px / 16 px units


def _arch(encoder, order='correct'):
  return ummae.UMMAEConfig(encoder=encoder, decoder=DECODER, decoder_pos_order=order)


def _random_params(arch, seed=0, scale=0.3):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _images(batch, seed=1, size=64):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def _masks(batch, seed=2):
  hidden = um.draw_uniform_mask(jax.random.PRNGKey(seed), batch, G)
  secondary = um.draw_secondary_mask(jax.random.PRNGKey(seed + 1), hidden, 0.25)
  return np.asarray(hidden), np.asarray(secondary)


def test_official_parameter_names():
  sd = pytorch_names.state_dict_from_params(_random_params(_arch(SWIN)), _arch(SWIN))
  for key, shape in {'vis_mask_token': (1, 1, 16), 'patch_embed.proj.weight': (16, 3, 4, 4),
                     'patch_embed.norm.weight': (16,),
                     'blocks.1.attn.posmlp.0.weight': (8, 2, 1, 1),
                     'blocks.1.attn.posmlp.2.weight': (1, 8, 1, 1),
                     'blocks.2.downsample.norm.weight': (16,),
                     'blocks.2.downsample.proj.weight': (32, 16, 2, 2),
                     'blocks.4.attn.qkv.weight': (384, 128), 'norm.weight': (128,),
                     'mask_token': (1, 1, 16), 'decoder_embed.weight': (64, 128),
                     'decoder_blocks.0.attn.qkv.weight': (48, 16),
                     'decoder_pred.weight': (768, 16), 'decoder_pos_embed': (1, 16, 16)}.items():
    assert sd[key].shape == shape, key
  sd = pytorch_names.state_dict_from_params(_random_params(_arch(PVT)), _arch(PVT))
  for key, shape in {'pos_embed': (1, 256, 8), 'blocks.0.attn.sr.weight': (8, 8, 1, 1),
                     'blocks.0.attn.q.weight': (8, 8), 'blocks.0.attn.kv.weight': (16, 8),
                     'blocks.0.attn.norm.weight': (8,), 'blocks.1.downsample.proj.weight':
                     (16, 8, 2, 2), 'blocks.0.mlp.fc1.weight': (64, 8)}.items():
    assert sd[key].shape == shape, key


@pytest.mark.parametrize('arch,expected', [
    # Counted on the official models (implus/UM-MAE: models_swin.swin_tiny_256,
    # models_pvt.pvt_small_256 with 1000 classes; models_mae_swin.mae_swin_tiny_256 and
    # models_mae_pvt.mae_pvt_small_256 with vis_mask_ratio 0.25, trainable params).
    (ClassifierConfig(ummae_swin.config('tiny', **ummae_swin.CLASSIFIER_FIELDS), 1000),
     28_268_050),
    (ClassifierConfig(pvt.config('small', **pvt.CLASSIFIER_FIELDS), 1000), 21_546_728),
    (ummae.UMMAEConfig(encoder=ummae_swin.config('tiny')), 35_774_346),
    (ummae.UMMAEConfig(encoder=pvt.config('small')), 28_522_560),
])
def test_parameter_counts_match_the_official_models(arch, expected):
  params = architectures.abstract_params(architectures.build_model(arch))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == expected


# ---------------- an independent PyTorch computation of the official models ----------------

def _ln(torch, x, sd, key, eps):
  return torch.nn.functional.layer_norm(x, (x.shape[-1],), sd[key + '.weight'],
                                        sd[key + '.bias'], eps)


def _lin(torch, x, sd, key):
  return torch.nn.functional.linear(x, sd[key + '.weight'], sd[key + '.bias'])


def _conv(torch, x, sd, key, stride):
  """NHWC in and out, PyTorch's NCHW conv in between."""
  y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), sd[key + '.weight'], sd[key + '.bias'],
                                 stride=stride)
  return y.permute(0, 2, 3, 1)


def _mlp(torch, x, sd, key):
  return _lin(torch, torch.nn.functional.gelu(_lin(torch, x, sd, key + '.fc1')), sd, key + '.fc2')


def _attend(torch, q, k, v, bias=None):
  """q [B, heads, N, d], k, v [B, heads, M, d] -> [B, N, heads * d]."""
  logits = q @ k.transpose(-2, -1) * q.shape[-1]**-0.5
  if bias is not None:
    logits = logits + bias
  out = logits.softmax(-1) @ v
  return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _region(size, window, shift):
  """Shifted-map region band of each row (or column): 0 | 1 | 2 as standard Swin cuts it."""
  r = np.arange(size)
  return np.where(r < size - window, 0, np.where(r < size - shift, 1, 2))


def _swin_block(torch, x, pos, sd, key, heads, window, shifted):
  """One UM-MAE Swin block on NHWC tokens with (row, col) coordinates [1|B, H, W, 2]."""
  if key + '.downsample.proj.weight' in sd:
    x = _conv(torch, _ln(torch, x, sd, key + '.downsample.norm', 1e-6), sd,
              key + '.downsample.proj', 2)
    pos = pos[:, ::2, ::2] / 2
  b, h, w, c = x.shape
  win = min(window, h)
  shift = win // 2 if shifted and h > window else 0
  y = _ln(torch, x, sd, key + '.norm1', 1e-5)
  p = pos
  if shift:
    y, p = torch.roll(y, (-shift, -shift), (1, 2)), torch.roll(pos, (-shift, -shift), (1, 2))
  band = _region(h, win, shift) if shift else np.zeros(h, int)
  out = torch.zeros_like(y)
  for wr in range(h // win):
    for wc in range(w // win):
      rows, cols = slice(wr * win, (wr + 1) * win), slice(wc * win, (wc + 1) * win)
      t = y[:, rows, cols].reshape(b, -1, c)
      pc = p[:, rows, cols].reshape(p.shape[0], -1, 2)
      d = pc[:, None, :, :] - pc[:, :, None, :]  # [., query, key, 2] = key - query
      d = torch.sign(d) * torch.log(1 + d.abs())
      k0, k2 = key + '.attn.posmlp.0', key + '.attn.posmlp.2'
      hidden = torch.relu(d @ sd[k0 + '.weight'][:, :, 0, 0].T + sd[k0 + '.bias'])
      bias = (hidden @ sd[k2 + '.weight'][:, :, 0, 0].T + sd[k2 + '.bias']).permute(0, 3, 1, 2)
      ids = (band[rows][:, None] * 3 + band[cols][None, :]).reshape(-1)
      bias = bias + torch.tensor(np.where(ids[:, None] == ids[None, :], 0.0, -100.0),
                                 dtype=torch.float32)
      qkv = _lin(torch, t, sd, key + '.attn.qkv').reshape(b, -1, 3, heads, c // heads)
      q, k, v = qkv.permute(2, 0, 3, 1, 4)
      a = _lin(torch, _attend(torch, q, k, v, bias), sd, key + '.attn.proj')
      out[:, rows, cols] = a.reshape(b, win, win, c)
  if shift:
    out = torch.roll(out, (shift, shift), (1, 2))
  x = x + out
  return x + _mlp(torch, _ln(torch, x, sd, key + '.norm2', 1e-5), sd, key + '.mlp'), pos


def _pvt_block(torch, x, sd, key, heads, sr):
  if key + '.downsample.proj.weight' in sd:
    x = _conv(torch, x, sd, key + '.downsample.proj', 2)
  b, h, w, c = x.shape
  y = _ln(torch, x, sd, key + '.norm1', 1e-5)
  q = _lin(torch, y, sd, key + '.attn.q').reshape(b, -1, heads, c // heads).transpose(1, 2)
  r = torch.nn.functional.avg_pool2d(y.permute(0, 3, 1, 2), sr).permute(0, 2, 3, 1)
  r = _ln(torch, _conv(torch, r, sd, key + '.attn.sr', 1), sd, key + '.attn.norm', 1e-5)
  kv = _lin(torch, r.reshape(b, -1, c), sd, key + '.attn.kv').reshape(b, -1, 2, heads,
                                                                        c // heads)
  k, v = kv.permute(2, 0, 3, 1, 4)
  a = _lin(torch, _attend(torch, q, k, v), sd, key + '.attn.proj').reshape(b, h, w, c)
  x = x + a
  return x + _mlp(torch, _ln(torch, x, sd, key + '.norm2', 1e-5), sd, key + '.mlp')


def _sincos(dim, grid):
  """MAE's 2-D sin-cos table [grid^2, dim]: columns in the first half, rows in the second."""
  def one(d, positions):
    omega = 1.0 / 10000**(np.arange(d // 2) / (d / 2.0))
    angles = np.outer(positions, omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], 1)
  rows, cols = np.divmod(np.arange(grid * grid), grid)
  return np.concatenate([one(dim // 2, cols), one(dim // 2, rows)], 1).astype(np.float32)


def _shown(hidden_b):
  """The shown unit (row, col) of every group of one image, groups in raster order."""
  g = hidden_b.shape[0]
  return [next((2 * gr + i, 2 * gc + j) for i in range(2) for j in range(2)
               if hidden_b[2 * gr + i, 2 * gc + j] == 0)
          for gr in range(g // 2) for gc in range(g // 2)]


def _gather_units(torch, x, hidden, k):
  """Each image's shown units, their k x k tokens in place, at their group's place."""
  g = hidden.shape[1]
  out = torch.zeros(x.shape[0], g // 2 * k, g // 2 * k, x.shape[-1])
  for n in range(x.shape[0]):
    for t, (r, c) in enumerate(_shown(hidden[n])):
      gr, gc = divmod(t, g // 2)
      out[n, gr * k:(gr + 1) * k, gc * k:(gc + 1) * k] = x[n, r * k:(r + 1) * k,
                                                           c * k:(c + 1) * k]
  return out


def _decode(torch, sd, z, hidden, arch):
  """Linear to 4 x width, 2x pixel shuffle, positions, mask tokens, blocks, pixels."""
  dec = arch.decoder
  x = _lin(torch, z, sd, 'decoder_embed')
  x = torch.nn.functional.pixel_shuffle(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
  b = x.shape[0]
  x = x.reshape(b, -1, dec.dim)
  table = torch.tensor(_sincos(dec.dim, G))
  rows = []
  for n in range(b):
    units = [r * G + c for r, c in _shown(hidden[n])]
    if arch.decoder_pos_order == 'official':
      units = sorted(units)
    hidden_units = list(np.flatnonzero(hidden[n].reshape(-1)))
    rows.append(torch.cat([x[n] + table[units], sd['mask_token'][0] + table[hidden_units]]))
  x = torch.stack(rows)
  for i in range(dec.depth):
    key = f'decoder_blocks.{i}'
    h = _ln(torch, x, sd, key + '.norm1', 1e-6)
    qkv = _lin(torch, h, sd, key + '.attn.qkv').reshape(b, -1, 3, dec.num_heads,
                                                          dec.dim // dec.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    x = x + _lin(torch, _attend(torch, q, k, v), sd, key + '.attn.proj')
    x = x + _mlp(torch, _ln(torch, x, sd, key + '.norm2', 1e-6), sd, key + '.mlp')
  pred = _lin(torch, _ln(torch, x, sd, 'decoder_norm', 1e-6), sd, 'decoder_pred')
  return pred[:, :G * G // 4], pred[:, G * G // 4:]


def _torch_ummae(torch, sd, images, hidden, secondary, arch):
  """The official pretraining forward: (loss, predictions at hidden units, at shown units)."""
  enc = arch.encoder
  k = arch.unit_size // enc.patch_size
  x = _conv(torch, torch.tensor(images), sd, 'patch_embed.proj', enc.patch_size)
  token = sd['vis_mask_token'][0, 0]
  if enc.name == 'ummae_swin':
    x = _ln(torch, x, sd, 'patch_embed.norm', 1e-6)
    token = _ln(torch, token, sd, 'patch_embed.norm', 1e-6)
  for n, r, c in zip(*np.nonzero(secondary)):
    x[n, r * k:(r + 1) * k, c * k:(c + 1) * k] = token
  x = _gather_units(torch, x, hidden, k)
  if enc.name == 'pvt':
    table = sd['pos_embed'].reshape(1, enc.grid, enc.grid, -1).expand(len(images), -1, -1, -1)
    x = x + _gather_units(torch, table, hidden, k)
    for i, s in enumerate(_flat_blocks(enc)):
      x = _pvt_block(torch, x, sd, f'blocks.{i}', s['num_heads'], s['sr_ratio'])
  else:
    rows, cols = np.meshgrid(np.arange(enc.grid), np.arange(enc.grid), indexing='ij')
    coords = torch.tensor(np.stack([rows, cols], -1)[None].repeat(len(images), 0),
                          dtype=torch.float32)
    pos = _gather_units(torch, coords, hidden, k)
    for i, s in enumerate(_flat_blocks(enc)):
      x, pos = _swin_block(torch, x, pos, sd, f'blocks.{i}', s['num_heads'], enc.window_size,
                           s['shifted'])
  z = _ln(torch, x, sd, 'norm', 1e-6)
  pred_shown, pred = _decode(torch, sd, z, hidden, arch)
  p = arch.unit_size
  target = torch.tensor(images).reshape(len(images), G, p, G, p, 3).permute(0, 1, 3, 2, 4, 5)
  target = target.reshape(len(images), G * G, -1)
  target = torch.stack([target[n][np.flatnonzero(hidden[n].reshape(-1))]
                        for n in range(len(images))])
  target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) +
                                                        1e-6)**0.5
  return ((pred - target)**2).mean(), pred, pred_shown


def _flat_blocks(enc):
  """Per flat block: heads, reduction and shift parity, from the stage tables (not our code)."""
  out = []
  for s, depth in enumerate(enc.depths):
    for j in range(depth):
      out.append({'num_heads': enc.num_heads[s], 'shifted': j % 2 == 1,
                  'sr_ratio': getattr(enc, 'sr_ratios', (1,) * 4)[s]})
  return out


@pytest.fixture
def torch():
  return pytest.importorskip('torch')


@pytest.mark.parametrize('encoder', [SWIN, PVT], ids=['ummae_swin', 'pvt'])
@pytest.mark.parametrize('order', ummae.POS_ORDERS)
def test_loss_and_predictions_match_the_official_computation(torch, encoder, order):
  arch = _arch(encoder, order)
  params = _random_params(arch)
  sd = {k: torch.tensor(v) for k, v in
        pytorch_names.state_dict_from_params(params, arch).items()}
  images = _images(3)
  hidden, secondary = _masks(3)
  with jax.default_matmul_precision('highest'):
    out = architectures.build_model(arch).apply({'params': params}, jnp.asarray(images),
                                                mask=hidden, secondary=secondary)
  with torch.no_grad():
    loss, pred, pred_shown = _torch_ummae(torch, sd, images, hidden, secondary, arch)
  np.testing.assert_allclose(out['pred'], pred.numpy(), atol=3e-5)
  np.testing.assert_allclose(out['pred_visible'], pred_shown.numpy(), atol=3e-5)
  assert float(out['loss']) == pytest.approx(float(loss), rel=1e-5)


def test_the_two_orders_differ_only_in_the_shown_tokens_positions():
  params = _random_params(_arch(SWIN))
  hidden, secondary = _masks(2, seed=11)
  outs = [architectures.build_model(_arch(SWIN, order)).apply(
      {'params': params}, jnp.asarray(_images(2)), mask=hidden, secondary=secondary)
          for order in ummae.POS_ORDERS]
  moved = np.asarray(ummae.decoder_positions(hidden, 'correct')) != \
      np.asarray(ummae.decoder_positions(hidden, 'official'))
  assert moved.any()  # these masks put some token at another unit's position
  assert not np.allclose(outs[0]['pred'], outs[1]['pred'])


def test_loss_matches_an_independent_numpy_computation():
  arch = _arch(SWIN)
  params = _random_params(arch, seed=3)
  images = _images(2, seed=4)
  hidden, secondary = _masks(2, seed=5)
  out = architectures.build_model(arch).apply({'params': params}, jnp.asarray(images),
                                              mask=hidden, secondary=secondary)
  patches = images.reshape(2, G, 16, G, 16, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, G * G, -1)
  loss = 0.0
  for n in range(2):
    target = patches[n][hidden[n].reshape(-1) == 1].astype(np.float64)  # raster order
    target = (target - target.mean(1, keepdims=True)) / np.sqrt(
        target.var(1, ddof=1, keepdims=True) + 1e-6)
    loss += np.mean((np.asarray(out['pred'][n], np.float64) - target)**2) / 2
  assert float(out['loss']) == pytest.approx(loss, rel=1e-5)


def test_secondary_masked_units_are_not_in_the_loss():
  arch = _arch(SWIN)
  assert ummae.hidden_reconstruction_loss(jnp.ones((1, 3, 2)), jnp.zeros((1, 3, 2))) == 1.0
  out = architectures.build_model(arch).apply(
      {'params': _random_params(arch)}, jnp.asarray(_images(2)),
      rngs={'mask': jax.random.PRNGKey(0)})
  assert out['pred'].shape == (2, 12, 768) and out['pred_visible'].shape == (2, 4, 768)
  assert np.all(np.asarray(out['secondary']).reshape(2, -1).sum(1) == 1)  # 4 - int(4 x .75)


def test_masks_come_from_the_mask_rng_per_image():
  arch = _arch(SWIN)
  model, params = architectures.build_model(arch), _random_params(arch)
  images = jnp.asarray(_images(8))
  a = model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(1)})
  b = model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(1)})
  c = model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(2)})
  np.testing.assert_array_equal(a['mask'], b['mask'])
  np.testing.assert_array_equal(a['secondary'], b['secondary'])
  assert float(a['loss']) == float(b['loss'])
  assert not np.array_equal(a['mask'], c['mask'])
  assert len({m.tobytes() for m in np.asarray(a['mask'])}) > 1


def test_explicit_masks_must_obey_the_laws():
  arch = _arch(SWIN)
  model, params = architectures.build_model(arch), _random_params(arch)
  images = jnp.asarray(_images(2))
  hidden, secondary = _masks(2)
  bad = hidden.copy()
  bad[0, 0, :2] = 0  # two shown units in the first group
  with pytest.raises(ValueError, match='exactly one 0'):
    model.apply({'params': params}, images, mask=bad, secondary=secondary)
  with pytest.raises(ValueError, match='exactly 1 ones per image, all on shown units'):
    model.apply({'params': params}, images, mask=hidden, secondary=hidden)
  with pytest.raises(ValueError, match='needs the uniform mask'):
    model.apply({'params': params}, images, secondary=secondary)


@pytest.mark.parametrize('field,value,message', [
    ('unit_size', 8, 'objective.unit_size=8'),
    ('sampling', 'random', "objective.sampling='random'"),
    ('secondary_ratio', 1.0, 'objective.secondary_ratio=1.0'),
    ('decoder_pos_order', 'raster', "objective.decoder_pos_order='raster'"),
])
def test_impossible_architectures_name_the_field(field, value, message):
  problems = dataclasses.replace(_arch(SWIN), **{field: value}).problems()
  assert any(message in p for p in problems), problems
  # a reduction that pools the full 16x16 grid but not the compact 8x8 one
  pooled = _arch(dataclasses.replace(PVT, sr_ratios=(16, 2, 1, 1))).problems()
  assert pooled == ['encoder.sr_ratios[0]=16 does not divide the stage-0 grid 8x8 (the compact '
                    '8x8 pretraining grid).'], pooled


def _torch_classifier(torch, sd, images, encoder):
  x = _conv(torch, torch.tensor(images), sd, 'patch_embed.proj', encoder.patch_size)
  if encoder.name == 'pvt':
    x = x + sd['pos_embed'].reshape(1, encoder.grid, encoder.grid, -1)
    for i, s in enumerate(_flat_blocks(encoder)):
      x = _pvt_block(torch, x, sd, f'blocks.{i}', s['num_heads'], s['sr_ratio'])
  else:
    x = _ln(torch, x, sd, 'patch_embed.norm', 1e-6)
    rows, cols = np.meshgrid(np.arange(encoder.grid), np.arange(encoder.grid), indexing='ij')
    pos = torch.tensor(np.stack([rows, cols], -1)[None], dtype=torch.float32)
    for i, s in enumerate(_flat_blocks(encoder)):
      x, pos = _swin_block(torch, x, pos, sd, f'blocks.{i}', s['num_heads'],
                           encoder.window_size, s['shifted'])
  x = _ln(torch, x.mean((1, 2)), sd, 'fc_norm', 1e-6)
  return _lin(torch, x, sd, 'head')


@pytest.mark.parametrize('encoder', [
    dataclasses.replace(SWIN, window_size=8, head_norm='fc_norm'),
    dataclasses.replace(PVT, sr_ratios=(8, 4, 2, 1), pos_embed='learned', head_norm='fc_norm')],
    ids=['ummae_swin', 'pvt'])
def test_classifier_logits_match_the_official_model(torch, encoder):
  """On the full grid: UM-MAE's Swin with windows of 8 (shifted on the 16x16 first stage), PVT
  with the fine-tuning reduction and a learned table."""
  arch = ClassifierConfig(encoder, num_classes=5)
  params = _random_params(arch, seed=6)
  sd = {k: torch.tensor(v) for k, v in
        pytorch_names.state_dict_from_params(params, arch).items()}
  assert 'fc_norm.weight' in sd and 'norm.weight' not in sd
  images = _images(2, seed=7)
  with jax.default_matmul_precision('highest'):
    logits = Classifier(arch).apply({'params': params}, jnp.asarray(images))
  with torch.no_grad():
    want = _torch_classifier(torch, sd, images, encoder)
  np.testing.assert_allclose(logits, want.numpy(), atol=3e-5)


def _save(torch, path, state_dict):
  torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}}, path)


@pytest.mark.parametrize('arch_name,kind', [('ummae_swin_tiny', 'pretraining'),
                                            ('ummae_swin_tiny', 'classifier'),
                                            ('ummae_pvt_small', 'pretraining'),
                                            ('ummae_pvt_small', 'classifier')])
def test_official_files_convert_both_ways(torch, tmp_path, arch_name, kind):
  """A random official-format state dict (the official sin-cos buffers included) converts to ours
  and back unchanged; a pretraining one defaults to the official decoder order."""
  family, size = {'ummae_swin_tiny': ('ummae_swin', 'tiny'),
                  'ummae_pvt_small': ('pvt', 'small')}[arch_name]
  module = {'ummae_swin': ummae_swin, 'pvt': pvt}[family]
  encoder = module.config(size, img_size=64)
  arch = (ummae.UMMAEConfig(encoder=encoder, decoder_pos_order='official') if kind ==
          'pretraining' else ClassifierConfig(module.config(size, img_size=64,
                                                            **module.CLASSIFIER_FIELDS), 3))
  original = pytorch_names.state_dict_from_params(_random_params(arch, seed=8, scale=0.05),
                                                  arch)
  _save(torch, tmp_path / 'in.pth', original)
  flags = ['--img_size', '64'] if family == 'ummae_swin' else []
  assert convert.main([str(tmp_path / 'in.pth'), str(tmp_path / 'ours'), '--arch', arch_name,
                       *flags]) == 0
  model, _ = mixmae_jax.load(str(tmp_path / 'ours'))
  assert model.config == arch
  assert convert.main([str(tmp_path / 'ours'), str(tmp_path / 'back.pth')]) == 0
  back = torch.load(tmp_path / 'back.pth', weights_only=True)['model']
  assert set(back) == set(original)
  for k, v in original.items():
    np.testing.assert_array_equal(back[k].numpy(), v)


def test_wrong_arch_names_what_the_checkpoint_looks_like(torch, tmp_path, capsys):
  arch = ummae.UMMAEConfig(encoder=pvt.config('small', img_size=64))
  _save(torch, tmp_path / 'p.pth', pytorch_names.state_dict_from_params(_random_params(arch),
                                                                        arch))
  assert convert.main([str(tmp_path / 'p.pth'), str(tmp_path / 'o'), '--arch',
                       'ummae_swin_tiny']) == 1
  assert 'width 96 but the checkpoint has 64: it looks like ummae_pvt_small' in \
      capsys.readouterr().err


def test_pvt_fine_tunes_from_its_pretraining_with_the_official_layer_ids():
  """The pretraining's sin-cos table becomes the learned `pos_embed`; `norm` is left out and
  `fc_norm` new; layer ids: patch embed and positions 0, block k k + 1, head the full rate."""
  params = _random_params(_arch(PVT))
  target = dataclasses.replace(PVT, **pvt.CLASSIFIER_FIELDS)
  moved, encoder = pvt.adapt(pretrained.encoder_params(params, PVT), PVT, target)
  assert encoder == target and 'vis_mask_token' not in moved and 'mask_token' not in moved
  np.testing.assert_allclose(moved['pos_embed'][0], _sincos(8, 16), atol=1e-6)
  model = Classifier(ClassifierConfig(encoder, num_classes=3))
  fresh = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  merged = pretrained.merge_encoder(dict(fresh), moved)
  assert 'norm' not in merged and 'fc_norm' in merged
  assert model.apply({'params': merged}, jnp.zeros((2, 64, 64, 3))).shape == (2, 3)
  scales = layer_decay.layer_scales(merged, encoder, 0.5)
  n = sum(PVT.depths) + 1
  assert scales['pos_embed'] == scales['patch_embed']['proj']['kernel'] == 0.5**n
  assert scales['blocks_1']['downsample']['proj']['kernel'] == 0.5**(n - 2)  # block 1's id
  assert scales['head']['kernel'] == scales['fc_norm']['scale'] == 1.0


def test_ummae_swin_moves_to_the_fine_tuning_windows_unchanged():
  params = _random_params(_arch(SWIN))
  target = dataclasses.replace(SWIN, window_size=8, head_norm='fc_norm')
  moved, encoder = ummae_swin.adapt(pretrained.encoder_params(params, SWIN), SWIN, target)
  assert encoder == target
  for a, b in zip(jax.tree.leaves(moved['blocks_1']), jax.tree.leaves(params['blocks_1'])):
    np.testing.assert_array_equal(a, b)
  assert ummae_swin.layer_id(('blocks_2', 'downsample', 'proj', 'kernel'), SWIN) == 3
  assert ummae_swin.layer_id(('head', 'kernel'), SWIN) == ummae_swin.num_layer_ids(SWIN) == 6
