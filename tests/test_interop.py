"""Official PyTorch checkpoints in and out, resolution changes, and our blocks against timm.

Name mapping and round trips run everywhere (numpy); `.pth` files need torch and the building
block oracles need timm; those tests skip when the package is missing.
"""
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixmae_jax
from mixmae_jax.interop import convert, pytorch_names
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.mixmae import MixMAEConfig
from mixmae_jax.networks.swin import config as swin_config
from mixmae_jax.networks.classifier import Classifier
from mixmae_jax.architectures import abstract_params, build_model
from mixmae_jax.networks import adapt_encoder
from mixmae_jax.networks.resolution import bicubic_matrix, bicubic_resize
from mixmae_jax.networks.swin_layers import PatchMerging, WindowAttention, relative_position_index

SMALL = swin_config('base', img_size=64, embed_dim=16, depths=(1, 2, 1, 1),
                    num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2))
PRETRAIN = MixMAEConfig(encoder=SMALL, decoder=DecoderConfig(dim=32, depth=2, num_heads=4))
CLASSIFIER = ClassifierConfig(encoder=SMALL, num_classes=7)


def _random_params(arch, seed=0):
  shapes = abstract_params(build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


@pytest.mark.parametrize('arch', [PRETRAIN, CLASSIFIER], ids=['pretrain', 'classifier'])
def test_official_to_ours_to_official_is_the_identity(arch):
  params = _random_params(arch)
  state_dict = pytorch_names.state_dict_from_params(params, arch)
  assert {k: v.shape for k, v in state_dict.items()} == pytorch_names.expected_shapes(
      abstract_params(build_model(arch)), arch)
  assert 'layers.1.blocks.1.attn.qkv.weight' in state_dict
  assert 'layers.0.downsample.reduction.weight' in state_dict
  assert state_dict['patch_embed.proj.weight'].shape == (16, 3, 4, 4)  # [out, in, kh, kw]
  back = pytorch_names.params_from_state_dict(state_dict, arch)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  again = pytorch_names.state_dict_from_params(back, arch)
  assert set(again) == set(state_dict)
  for k in state_dict:
    np.testing.assert_array_equal(again[k], state_dict[k])


def test_a_buffer_from_another_resolution_is_refused():
  state_dict = pytorch_names.state_dict_from_params(_random_params(CLASSIFIER), CLASSIFIER)
  state_dict['absolute_pos_embed'] = state_dict['absolute_pos_embed'] + 0.5
  with pytest.raises(ValueError, match='absolute_pos_embed'):
    pytorch_names.params_from_state_dict(state_dict, CLASSIFIER)


def test_torch_compatible_bicubic_properties():
  np.testing.assert_array_equal(bicubic_matrix(7, 7), np.eye(7))
  for n_in, n_out in ((27, 31), (27, 47), (13, 23), (56, 96), (31, 27)):
    m = bicubic_matrix(n_in, n_out)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)  # constants stay constant
  x = np.random.default_rng(0).normal(size=(5, 6, 2))
  np.testing.assert_allclose(bicubic_resize(x, 5, 6), x, atol=1e-6)


def test_bicubic_matches_torch_interpolate():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).normal(size=(27, 27, 5)).astype(np.float32)
  for size in (31, 47, 23, 13):
    ref = torch.nn.functional.interpolate(torch.tensor(x).permute(2, 0, 1)[None], size=(size, size),
                                          mode='bicubic', align_corners=False)
    np.testing.assert_allclose(bicubic_resize(x, size, size), ref[0].permute(1, 2, 0).numpy(),
                               atol=1e-5)


def test_an_encoder_adapts_to_a_new_resolution_and_window_size():
  params = _random_params(CLASSIFIER)
  target = dataclasses.replace(SMALL, img_size=96, window_sizes=(6, 6, 6, 3))
  adapted, encoder = adapt_encoder(params, SMALL, target)
  assert encoder.pos_embed_grid == 16  # the 64 px table, resized to the 24x24 grid
  table = adapted['layers_0']['blocks_0']['attn']['relative_position_bias_table']
  assert table.shape == ((2 * 6 - 1)**2, 1)
  logits = Classifier(ClassifierConfig(encoder=encoder, num_classes=7)).apply(
      {'params': adapted}, jnp.zeros((1, 96, 96, 3)))
  assert logits.shape == (1, 7) and np.all(np.isfinite(logits))
  with pytest.raises(ValueError, match='embed_dim'):
    adapt_encoder(params, SMALL, dataclasses.replace(SMALL, embed_dim=32))


def _save_official(torch, path, arch, seed=0, extra=None, drop=None):
  state_dict = pytorch_names.state_dict_from_params(_random_params(arch, seed), arch)
  state_dict.update(extra or {})
  for k in drop or ():
    state_dict.pop(k)
  torch.save({'model': {k: torch.tensor(v) for k, v in state_dict.items()}, 'epoch': 1}, path)
  return state_dict


@pytest.fixture
def torch():
  return pytest.importorskip('torch')


@pytest.fixture
def base_224_classifier():
  return ClassifierConfig(encoder=swin_config('base'), num_classes=10)


def test_pth_files_convert_both_ways(torch, tmp_path, base_224_classifier):
  arch = base_224_classifier
  original = _save_official(torch, tmp_path / 'ft.pth', arch)
  assert convert.main([str(tmp_path / 'ft.pth'), str(tmp_path / 'ours'), '--arch',
                       'mixmim_base']) == 0
  model, params = mixmae_jax.load(str(tmp_path / 'ours'))
  assert isinstance(model, Classifier) and model.config == arch
  assert convert.main([str(tmp_path / 'ours'), str(tmp_path / 'back.pth')]) == 0
  back = torch.load(tmp_path / 'back.pth', weights_only=True)['model']
  assert set(back) == set(original)
  for k, v in original.items():
    np.testing.assert_array_equal(back[k].numpy(), v)


@pytest.mark.parametrize('case,message', [
    ('wrong_arch', 'looks like mixmim_base'),
    ('foreign_key', 'unexpected (1): foo.bar'),
    ('missing_key', 'missing (1): layers.2.blocks.17.mlp.fc2.bias'),
    ('truncated', 'could not be read as a PyTorch checkpoint'),
])
def test_bad_inputs_give_clear_errors(torch, tmp_path, capsys, case, message,
                                      base_224_classifier):
  path, arch = tmp_path / 'x.pth', 'mixmim_base'
  if case == 'wrong_arch':
    _save_official(torch, path, base_224_classifier)
    arch = 'mixmim_large'
  elif case == 'foreign_key':
    _save_official(torch, path, base_224_classifier, extra={'foo.bar': np.zeros(3, np.float32)})
  elif case == 'missing_key':
    _save_official(torch, path, base_224_classifier, drop=['layers.2.blocks.17.mlp.fc2.bias'])
  else:
    _save_official(torch, path, CLASSIFIER)
    path.write_bytes(path.read_bytes()[:2000])
  assert convert.main([str(path), str(tmp_path / 'out'), '--arch', arch]) == 1
  assert message in capsys.readouterr().err


def test_pickled_code_is_never_run(torch, tmp_path, capsys):
  class Payload:
    def __reduce__(self):
      return (print, ('pickled code ran',))

  torch.save({'model': {'x': Payload()}}, tmp_path / 'evil.pth')
  assert convert.main([str(tmp_path / 'evil.pth'), str(tmp_path / 'o'), '--arch',
                       'mixmim_base']) == 1
  captured = capsys.readouterr()
  assert 'pickled code ran' not in captured.out and 'could not be read' in captured.err


def _timm_swin():
  pytest.importorskip('torch')
  try:
    from timm.models import swin_transformer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    pytest.skip(f'timm is not usable here: {e}')
  return swin_transformer


def test_window_attention_matches_timm():
  torch = pytest.importorskip('torch')
  timm_swin = _timm_swin()
  dim, heads, window = 32, 4, 4
  params = inspect.signature(timm_swin.WindowAttention).parameters
  kwargs = dict(dim=dim, num_heads=heads, window_size=(window, window), qkv_bias=True)
  if 'head_dim' in params:
    kwargs['head_dim'] = None
  ref = timm_swin.WindowAttention(**kwargs).eval()
  with torch.no_grad():
    ref.relative_position_bias_table.normal_(std=0.5)
  np.testing.assert_array_equal(ref.relative_position_index.numpy(),
                                relative_position_index(window))
  x = np.random.default_rng(0).normal(size=(6, window * window, dim)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.tensor(x)).numpy()
  p = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  ours = {'qkv': {'kernel': p['qkv.weight'].T, 'bias': p['qkv.bias']},
          'proj': {'kernel': p['proj.weight'].T, 'bias': p['proj.bias']},
          'relative_position_bias_table': p['relative_position_bias_table']}
  with jax.default_matmul_precision('highest'):
    got = WindowAttention(window, heads).apply({'params': ours}, jnp.asarray(x)[None])[0]
  np.testing.assert_allclose(got, expected, atol=2e-5)


def test_patch_merging_matches_timm():
  torch = pytest.importorskip('torch')
  timm_swin = _timm_swin()
  dim, h = 8, 6
  params = inspect.signature(timm_swin.PatchMerging).parameters
  tokens_in = 'input_resolution' in params  # timm < 0.9 takes [B, H*W, C]
  ref = (timm_swin.PatchMerging((h, h), dim) if tokens_in else timm_swin.PatchMerging(dim)).eval()
  x = np.random.default_rng(1).normal(size=(2, h, h, dim)).astype(np.float32)
  with torch.no_grad():
    ref.norm.weight.normal_()
    ref.norm.bias.normal_()
    inp = torch.tensor(x).reshape(2, h * h, dim) if tokens_in else torch.tensor(x)
    expected = ref(inp).numpy().reshape(2, h // 2, h // 2, 2 * dim)
  p = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  ours = {'norm': {'scale': p['norm.weight'], 'bias': p['norm.bias']},
          'reduction': {'kernel': p['reduction.weight'].T}}
  with jax.default_matmul_precision('highest'):
    got = PatchMerging().apply({'params': ours}, jnp.asarray(x))
  np.testing.assert_allclose(got, expected, atol=2e-5)


def test_window_sizes_are_read_off_the_tables(torch, tmp_path):
  encoder = dataclasses.replace(swin_config('base'), img_size=384, window_sizes=(16, 16, 24, 12))
  arch = ClassifierConfig(encoder=encoder, num_classes=3)
  state_dict = pytorch_names.state_dict_from_params(
      jax.tree.map(lambda s: np.zeros(s.shape, np.float32), abstract_params(build_model(arch))),
      arch)
  assert convert.infer_arch(state_dict, 'mixmim_base') == arch

