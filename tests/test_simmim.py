"""SimMIM on the standard Swin (and UM-MAE's baseline variant): the mask law, where the mask token
goes, the L1 loss against numpy, the decoder layouts, the standard Swin's switches and buffers,
SimMIM's fine-tuning rules, official checkpoints in and out, and the step schedule."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixmae_jax
from mixmae_jax import architectures
from mixmae_jax.evaluation import layer_decay
from mixmae_jax.interop import convert, pytorch_names
from mixmae_jax.networks import resolution, swin, ummae_swin
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.objectives import simmim
from mixmae_jax.training import optimizer

SWIN = swin.config('tiny', img_size=64, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4),
                   window_sizes=(4, 4, 4, 2), **swin.STANDARD)
ARCH = simmim.SimMIMConfig(encoder=SWIN, unit_size=16, mask_ratio=0.6)
VARIANT = simmim.SimMIMConfig(
    encoder=ummae_swin.config('tiny', img_size=64, embed_dim=16, depths=(2, 1, 1, 1),
                              num_heads=(1, 2, 2, 4), window_size=8, posmlp_dim=8),
    unit_size=16, mask_ratio=0.75, decoder='linear')


def _random_params(arch, seed=0, scale=0.3):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _images(batch, seed=1, size=64):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def test_masks_take_the_ceil_count_per_image():
  assert simmim.SimMIMConfig().num_masked == 22  # of 36 at 192
  assert dataclasses.replace(simmim.SimMIMConfig(), encoder=swin.config(
      'base', window_sizes=(7,) * 4, **swin.STANDARD)).num_masked == 30  # of 49 at 224
  masks = np.asarray(simmim.random_unit_mask(jax.random.PRNGKey(0), 400, 6, 22))
  assert masks.shape == (400, 6, 6) and np.all(masks.reshape(400, -1).sum(1) == 22)
  assert len({m.tobytes() for m in masks}) == 400
  np.testing.assert_allclose(masks.mean(0), 22 / 36, atol=0.08)


def test_the_mask_token_replaces_normalized_patch_embeddings_of_masked_units():
  """What the first stage sees: the patch embedding after its LayerNorm, the token (raw) at every
  token of a masked unit, no absolute position embedding."""
  model, params = architectures.build_model(ARCH), _random_params(ARCH)
  images = jnp.asarray(_images(2))
  mask = np.zeros((2, 4, 4), np.int32)
  mask[0, 1, 2] = mask[1, 3, 0] = 1

  def first_stage_input(m, images, mask):
    x = m.encoder.embed(images)
    keep = jnp.asarray(np.kron(1 - mask, np.ones((4, 4))), bool)[..., None]
    return x, jnp.where(keep, x, m.mask_token)

  embedded, want = model.apply({'params': params}, images, mask, method=first_stage_input)
  patches = np.asarray(images).reshape(2, 16, 4, 16, 4, 3).transpose(0, 1, 3, 2, 4, 5)
  conv = patches.reshape(2, 16, 16, 48) @ np.asarray(
      params['patch_embed']['proj']['kernel']).reshape(48, 16) + np.asarray(
          params['patch_embed']['proj']['bias'])
  norm = params['patch_embed']['norm']
  mean, var = conv.mean(-1, keepdims=True), conv.var(-1, keepdims=True)
  normed = (conv - mean) / np.sqrt(var + 1e-5) * norm['scale'] + norm['bias']
  np.testing.assert_allclose(embedded, normed, atol=1e-4)

  def capture(m, images, mask):  # the first lines of SimMIM.encode_masked
    x = m.encoder.embed(images)
    masked = simmim.upsample(mask, 4)[..., None] == 1
    return jnp.where(masked, m.mask_token.astype(x.dtype), x) + m.encoder.position_embedding()

  got = model.apply({'params': params}, images, jnp.asarray(mask), method=capture)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(got)[0, 4:8, 8:12], np.broadcast_to(
      params['mask_token'][0, 0], (4, 4, 16)))


def test_loss_is_l1_on_masked_pixels_against_numpy():
  model, params = architectures.build_model(ARCH), _random_params(ARCH, seed=2)
  images = _images(2, seed=3)
  mask = np.asarray(simmim.random_unit_mask(jax.random.PRNGKey(4), 2, 4, ARCH.num_masked))
  out = model.apply({'params': params}, jnp.asarray(images), mask=mask)
  assert out['pred'].shape == (2, 64, 64, 3) and ARCH.num_masked == 10
  pixel = np.kron(mask, np.ones((16, 16)))[..., None]
  want = np.sum(np.abs(images - np.asarray(out['pred'])) * pixel) / (pixel.sum() + 1e-5) / 3
  assert float(out['loss']) == pytest.approx(want, rel=1e-5)


def test_decoders_lay_pixels_out_as_their_pixel_shuffles():
  """conv: Conv1x1 channel c*s*s + i*s + j is pixel (i, j) of channel c (PixelShuffle(32));
  linear: a 2x shuffle of the linear map's channels into four (p, q, c) patches of 16x16."""
  for arch in (ARCH, VARIANT):
    model, params = architectures.build_model(arch), _random_params(arch, seed=5)
    z = jnp.asarray(np.random.default_rng(6).normal(size=(1, 2, 2, arch.encoder.num_features)),
                    jnp.float32)
    image = np.asarray(model.apply({'params': params}, z, method=simmim.SimMIM.decode))
    if arch.decoder == 'conv':
      w = params['decoder']['0']
      flat = np.asarray(z) @ w['kernel'][0, 0] + w['bias']  # [1, 2, 2, 3 * 32 * 32]
      want = flat.reshape(1, 2, 2, 3, 32, 32).transpose(0, 1, 4, 2, 5, 3).reshape(1, 64, 64, 3)
    else:
      w = params['decoder_pred']
      flat = np.asarray(z) @ w['kernel'] + w['bias']  # [1, 2, 2, 768 * 4]
      units = flat.reshape(1, 2, 2, 768, 2, 2).transpose(0, 1, 4, 2, 5, 3)  # [1, h, i, w, j, 768]
      units = units.reshape(1, 4, 4, 16, 16, 3)
      want = units.transpose(0, 1, 3, 2, 4, 5).reshape(1, 64, 64, 3)
    np.testing.assert_allclose(image, want, atol=1e-4)


def test_standard_swin_has_no_absolute_table_and_carries_the_official_shift_masks():
  buffers = swin.fixed_buffers(SWIN)
  assert 'absolute_pos_embed' not in buffers
  mask = buffers['layers.0.blocks.1.attn_mask']  # 16x16 grid, windows of 4, shift 2
  assert mask.shape == (16, 16, 16) and set(np.unique(mask)) == {0.0, -100.0}
  assert np.all(mask[0] == 0)  # the top-left window does not wrap
  assert 'layers.1.blocks.1.attn_mask' in buffers  # 8x8 grid > window 4: shifted
  assert 'layers.0.blocks.0.attn_mask' not in buffers
  assert 'absolute_pos_embed' in swin.fixed_buffers(swin.config('tiny'))  # MixMIM's keeps it
  model = swin.Encoder(SWIN)
  zeros = model.apply({}, method=swin.Encoder.position_embedding)
  assert zeros.shape == (1, 1, 1, 16) and not np.any(zeros)


def _official_swin_layer(name: str, depths) -> int:
  """SimMIM's optimizer.get_swin_layer with num_layers = sum(depths) + 2, on dotted names."""
  if name in ('mask_token',) or name.startswith('patch_embed'):
    return 0
  if name.startswith('layers'):
    stage, block = int(name.split('.')[1]), name.split('.')[3]
    if block in ('reduction', 'norm'):
      return sum(depths[:stage + 1])
    return sum(depths[:stage]) + int(block) + 1
  return sum(depths) + 1


def test_simmim_fine_tuning_rules_give_its_layer_ids_scales_and_exemptions():
  depths = (2, 2, 18, 2)
  encoder = swin.config('base', depths=depths, **swin.STANDARD)
  names = [('patch_embed', 'proj', 'kernel'), ('norm', 'scale'), ('head', 'kernel')]
  names += [(f'layers_{s}', f'blocks_{j}', 'attn', 'qkv', 'kernel') for s in range(4)
            for j in range(depths[s])]
  names += [(f'layers_{s}', 'downsample', part, 'kernel') for s in range(3)
            for part in ('reduction', 'norm')]
  for n in names:
    dotted = '.'.join(p.replace('layers_', 'layers.').replace('blocks_', 'blocks.') for p in n)
    assert swin.layer_id(n, encoder) == _official_swin_layer(dotted, depths), n
  small = dataclasses.replace(SWIN, finetune_rules='simmim')
  arch = ClassifierConfig(small, 3)
  params = _random_params(arch)
  scales = layer_decay.layer_scales(params, small, 0.5)
  assert scales['head']['kernel'] == 1.0  # the head trains at the full rate
  assert scales['layers_0']['downsample']['reduction']['kernel'] == \
      scales['layers_0']['blocks_1']['attn']['qkv']['kernel']  # its own stage's last block
  decays = optimizer.weight_decay_mask(params, swin.no_weight_decay(small))
  assert not decays['layers_0']['blocks_0']['attn']['relative_position_bias_table']
  mixmim = dataclasses.replace(small, finetune_rules='mixmim')
  assert optimizer.weight_decay_mask(params, swin.no_weight_decay(mixmim))[
      'layers_0']['blocks_0']['attn']['relative_position_bias_table']


def test_geometric_resize_reproduces_a_plane():
  """SimMIM's remap fits an interpolating cubic spline at geometric offsets, which is exact on
  a function linear in the offsets: the resized table is the plane at the new offsets."""
  offsets = resolution.geometric_offsets(11, 13)
  assert offsets[5] == 0 and offsets[0] == -offsets[-1] and abs(offsets[-1] - 6) < 1e-3
  dy, dx = np.meshgrid(offsets, offsets, indexing='ij')
  table = np.stack([0.3 * dy - 0.2 * dx + 1.0, dx], -1).reshape(121, 2)
  resized = resolution.geometric_resize_bias_table(table, 7)
  ty, tx = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7), indexing='ij')
  np.testing.assert_allclose(resized.reshape(13, 13, 2), np.stack(
      [0.3 * ty - 0.2 * tx + 1.0, tx], -1), atol=1e-4)
  assert resolution.geometric_resize_bias_table(table, 6) is not table  # same size: a copy


def test_adapt_under_simmim_rules_resizes_tables_geometrically():
  params = _random_params(ClassifierConfig(dataclasses.replace(SWIN, window_sizes=(2,) * 4), 3))
  source = dataclasses.replace(SWIN, window_sizes=(2, 2, 2, 2))
  target = dataclasses.replace(SWIN, window_sizes=(4, 4, 4, 2))
  moved, _ = swin.adapt({k: v for k, v in params.items() if swin.is_encoder_param(k)}, source,
                        target)
  table = params['layers_0']['blocks_0']['attn']['relative_position_bias_table']
  np.testing.assert_allclose(moved['layers_0']['blocks_0']['attn'][
      'relative_position_bias_table'], resolution.geometric_resize_bias_table(table, 4))


def _save(torch, path, state_dict):
  torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}}, path)


@pytest.mark.parametrize('kind', ['pretraining', 'classifier'])
def test_official_files_convert_both_ways(tmp_path, kind):
  """A random official-format state dict (`encoder.`-prefixed in pretraining, the index and
  shift-mask buffers included) converts to ours and back unchanged."""
  torch = pytest.importorskip('torch')
  encoder = swin.config('base', img_size=192, window_sizes=(6,) * 4, **swin.STANDARD)
  arch = simmim.SimMIMConfig(encoder=encoder) if kind == 'pretraining' else ClassifierConfig(
      encoder, 4)
  ours = pytorch_names.state_dict_from_params(_random_params(arch, scale=0.05), arch)
  original = {('' if kind == 'classifier' or k.startswith('decoder.') else 'encoder.') + k: v
              for k, v in ours.items()}
  assert kind == 'classifier' or {'encoder.mask_token', 'decoder.0.weight',
                                  'encoder.layers.0.blocks.1.attn_mask'} <= set(original)
  _save(torch, tmp_path / 'in.pth', original)
  assert convert.main([str(tmp_path / 'in.pth'), str(tmp_path / 'ours'), '--arch',
                       'simmim_swin_base']) == 0
  model, _ = mixmae_jax.load(str(tmp_path / 'ours'))
  assert model.config == arch
  assert convert.main([str(tmp_path / 'ours'), str(tmp_path / 'back.pth'), '--arch',
                       'simmim_swin_base']) == 0
  back = torch.load(tmp_path / 'back.pth', weights_only=True)['model']
  assert set(back) == set(original)
  for k, v in original.items():
    np.testing.assert_array_equal(back[k].numpy(), v)


def test_a_mixmim_swin_is_not_exported_as_simmim_and_back():
  from mixmae_jax.interop import mixmim  # pylint: disable=import-outside-toplevel
  from mixmae_jax.interop import simmim as simmim_interop  # pylint: disable=import-outside-toplevel
  assert 'standard Swin' in simmim_interop.export_problem(
      ClassifierConfig(swin.config('base'), 3), None)
  assert 'absolute position table' in mixmim.export_problem(ClassifierConfig(SWIN, 3), None)


@pytest.mark.parametrize('field,value,message', [
    ('unit_size', 12, 'objective.unit_size=12'),
    ('mask_ratio', 0.0, 'objective.mask_ratio=0.0'),
    ('decoder', 'mlp', "objective.decoder='mlp'"),
])
def test_impossible_architectures_name_the_field(field, value, message):
  problems = dataclasses.replace(ARCH, **{field: value}).problems()
  assert any(message in p for p in problems), problems
  mixmim = dataclasses.replace(ARCH, encoder=dataclasses.replace(SWIN, abs_pos_embed=True))
  assert any('encoder.abs_pos_embed=True' in p for p in mixmim.problems())


def test_step_schedule_warms_up_then_steps_down_at_the_milestone():
  schedule = optimizer.warmup_step_schedule(1.0, 10, [30], 0.1)
  lrs = [float(schedule(jnp.asarray(s))) for s in (0, 5, 10, 29, 30, 100)]
  assert lrs == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.1, 0.1])
