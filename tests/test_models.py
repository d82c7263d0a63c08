"""Encoder/decoder structure, parameter counts, masked attention, the loss formula, and the
implementation options (fused attention, scanned blocks, remat) that must not change any of it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.networks import block_scan, swin
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.layers import Attention, cudnn_attention_applies
from mixmae_jax.networks.swin import Encoder as SwinEncoder
from mixmae_jax.networks.swin import SwinConfig
from mixmae_jax.networks.swin import config as swin_config
from mixmae_jax.networks.swin_layers import PatchMerging, WindowAttention
from mixmae_jax.objectives import mixing
from mixmae_jax.objectives.mixmae import MixMAE, MixMAEConfig

TINY = swin_config('tiny', img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
                   window_sizes=(4, 4, 4, 2))


def _tiny(shifted=False, **kw):
  enc = SwinConfig(**{**TINY.__dict__, 'shifted_windows': shifted})
  return MixMAEConfig(encoder=enc, decoder=DecoderConfig(dim=32, depth=2, num_heads=4), **kw)


def _init(arch, batch=4, seed=0):
  model = MixMAE(arch)
  images = jnp.zeros((batch, arch.encoder.img_size, arch.encoder.img_size, 3))
  params = jax.jit(model.init)({'params': jax.random.PRNGKey(seed),
                                'mask': jax.random.PRNGKey(1)}, images)
  return model, params['params']


def _count(tree, skip=()):
  return sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(tree)
             if not any(getattr(k, 'key', '').startswith(skip) for k in path if skip))


@pytest.mark.parametrize('size,expected_millions', [('base', 88), ('large', 197)])
def test_encoder_parameter_counts_match_the_paper(size, expected_millions):
  enc = swin_config(size)
  params = jax.eval_shape(lambda: SwinEncoder(enc).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))['params']
  with_head = _count(params) + enc.num_features * 1000 + 1000
  assert abs(with_head / 1e6 - expected_millions) < 1.0, with_head


def test_official_parameter_names():
  _, params = _init(_tiny())
  assert set(params) == {'patch_embed', 'layers_0', 'layers_1', 'layers_2', 'layers_3', 'norm',
                         'mask_token', 'decoder_embed', 'decoder_blocks_0', 'decoder_blocks_1',
                         'decoder_norm', 'decoder_pred'}
  assert set(params['layers_1']) == {'blocks_0', 'blocks_1', 'downsample'}
  assert 'downsample' not in params['layers_3']
  assert set(params['layers_0']['blocks_0']['attn']) == {'qkv', 'proj',
                                                        'relative_position_bias_table'}
  assert params['layers_0']['blocks_0']['attn']['relative_position_bias_table'].shape == (49, 1)
  assert params['decoder_pred']['kernel'].shape == (32, 32 * 32 * 3)


def test_window_is_clipped_to_a_smaller_grid():
  enc = swin_config('base')  # windows (14, 14, 14, 7) at 224: grids 56, 28, 14, 7
  assert [enc.stage_window(s) for s in range(4)] == [14, 14, 14, 7]
  enc = swin_config('base', img_size=192, window_sizes=(12, 12, 12, 12))
  assert [enc.stage_window(s) for s in range(4)] == [12, 12, 12, 6]


def test_patch_merging_concatenates_neighbours_in_timm_order():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  module = PatchMerging()
  params = module.init(jax.random.PRNGKey(0), x)
  captured = {}

  def capture(next_fun, args, kwargs, context):
    if context.module.name == 'norm':
      captured['x'] = args[0]
    return next_fun(*args, **kwargs)

  import flax.linen as nn
  with nn.intercept_methods(capture):
    module.apply(params, x)
  # (row0, col0), (row1, col0), (row0, col1), (row1, col1) of the top-left 2x2 block
  np.testing.assert_array_equal(captured['x'][0, 0, 0], [x[0, 0, 0, 0], x[0, 1, 0, 0],
                                                         x[0, 0, 1, 0], x[0, 1, 1, 0]])


@pytest.mark.parametrize('shifted', [False, True])
def test_masked_attention_hides_the_partner_image(shifted):
  """With masked self-attention, image i's tokens do not depend on its partner at all."""
  arch = _tiny(shifted)
  model, params = _init(arch, batch=2)
  key = jax.random.PRNGKey(5)
  a, b, c = jax.random.normal(key, (3, 64, 64, 3))
  mask = mixing.draw_mask(jax.random.PRNGKey(7), 2, 0.5)
  encode = jax.jit(lambda imgs: model.apply({'params': params}, imgs, mask,
                                            mixing.flip_pairing(2), False,
                                            method=MixMAE.encode_mixed))
  z_ab, z_ac = encode(jnp.stack([a, b])), encode(jnp.stack([a, c]))
  own = np.asarray(mask) == 0  # sample 0 shows image a where the mask is 0
  np.testing.assert_allclose(z_ab[0][own], z_ac[0][own], atol=1e-5)
  # ... while the partner's own positions do change, so the check above is not vacuous
  assert np.abs(np.asarray(z_ab[0][~own] - z_ac[0][~own])).max() > 1e-3


def test_without_the_same_source_mask_images_would_leak():
  """Control for the test above: the plain encoder on a pixel-blended input does leak."""
  arch = _tiny()
  _, params = _init(arch, batch=2)
  a, b, c = jax.random.normal(jax.random.PRNGKey(5), (3, 64, 64, 3))
  mask = np.array([[0, 1], [1, 0]])
  enc_params = {k: params[k] for k in ('patch_embed', 'layers_0', 'layers_1', 'layers_2',
                                       'layers_3', 'norm')}
  up = np.kron(mask, np.ones((32, 32)))[..., None]
  encode = jax.jit(lambda x: SwinEncoder(arch.encoder).apply({'params': enc_params}, x[None])[0])
  za, zc = encode(jnp.where(up == 1, b, a)), encode(jnp.where(up == 1, c, a))
  own = mask == 0
  assert np.abs(np.asarray(za[own] - zc[own])).max() > 1e-4


def _numpy_reference_loss(images, branches, mask, patch=32):
  """SPEC section 2 in numpy: nhwpqc patches, unbiased norm-pix, dual unmix, MSE over all."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  target = x.reshape(b, -1, patch * patch * c).astype(np.float64)
  mean = target.mean(-1, keepdims=True)
  var = target.var(-1, ddof=1, keepdims=True)
  target = (target - mean) / np.sqrt(var + 1e-6)
  m = mask.reshape(1, -1, 1)
  pred = np.where(m == 1, branches[0], branches[1][::-1])
  return np.mean((pred - target)**2), pred


def test_loss_and_predictions_match_an_independent_numpy_computation():
  arch = _tiny()
  model, params = _init(arch, batch=4)
  images = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (4, 64, 64, 3)))
  mask = np.array([[1, 0], [0, 0]], np.int32)
  out = model.apply({'params': params}, images, mask=mask)
  z = model.apply({'params': params}, images, mask, mixing.flip_pairing(4), False,
                  method=MixMAE.encode_mixed)
  branches = np.asarray(model.apply({'params': params}, z, mask, False,
                                    method=MixMAE.decode_dual), np.float64)
  loss, pred = _numpy_reference_loss(images, branches, mask)
  assert out['pred'].shape == (4, 4, 32 * 32 * 3)
  np.testing.assert_allclose(out['pred'], pred, rtol=1e-5, atol=1e-5)
  assert float(out['loss']) == pytest.approx(loss, rel=1e-5)


def test_mask_is_drawn_from_the_mask_rng_when_absent():
  arch = _tiny()
  model, params = _init(arch, batch=2)
  images = jnp.zeros((2, 64, 64, 3))
  outs = [model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(s)})
          for s in range(6)]
  assert all(o['mask'].shape == (2, 2) and int(o['mask'].sum()) == 2 for o in outs)
  assert len({tuple(np.asarray(o['mask']).ravel()) for o in outs}) > 1


def test_mix_embedding_option_adds_a_slot_table():
  _, params = _init(_tiny(mix_embedding=True))
  assert params['mix_embed'].shape == (2, 16)


def test_invalid_architectures_name_the_field():
  bad = swin_config('base', window_sizes=(12, 14, 14, 7))
  assert any('window_sizes[0]=12' in p for p in bad.problems())
  assert any('img_size=200' in p for p in swin_config('base', img_size=200).problems())
  assert any('mask_ratio=1.5' in p for p in MixMAEConfig(mask_ratio=1.5).problems())
  assert ClassifierConfig(num_classes=0).problems()


# --- Implementation options (compute_options.py): same params, same function. ---

PLAIN = ComputeOptions(attention='plain', scan_blocks=False, remat='none')


def _same_source_mask(batch_shared=True):
  """[1|B, nW, 1, N, N] allowed pairs for a 2-source checkerboard over 4x4 windows of 2x2."""
  source = np.kron(np.array([[0, 1, 0, 1], [1, 0, 1, 0]] * 2), np.ones((2, 2)))[None]
  if not batch_shared:
    source = np.concatenate([source, 1 - source])
  win = source.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(source.shape[0], 16, 4)
  return jnp.asarray(win[..., :, None] == win[..., None, :])[:, :, None]


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize('batch_shared', [True, False])
def test_fused_window_attention_matches_plain(dtype, tol, batch_shared):
  """Same-source mask and relative position bias through jax.nn.dot_product_attention."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 4, 32))  # [B, nW, N, C]
  allowed = _same_source_mask(batch_shared)
  plain = WindowAttention(2, 4, dtype=dtype, attention='plain')
  params = plain.init(jax.random.PRNGKey(1), x, allowed)
  # a visible bias: the initial table (std 0.02) would hide a wrong layout
  params = jax.tree.map(lambda p: p * 50 if p.ndim == 2 and p.shape[0] == 9 else p, params)
  want = plain.apply(params, x, allowed).astype(jnp.float32)
  for impl in ('xla', 'auto'):
    got = WindowAttention(2, 4, dtype=dtype, attention=impl).apply(params, x, allowed)
    assert got.dtype == want.dtype or dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=tol, rtol=tol)


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_fused_decoder_attention_matches_plain(dtype, tol):
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 9, 32))
  allowed = jax.random.bernoulli(jax.random.PRNGKey(2), 0.6, (6, 1, 9, 9)) | jnp.eye(9, dtype=bool)
  plain = Attention(4, dtype=dtype, attention='plain')
  params = plain.init(jax.random.PRNGKey(1), x)
  for mask in (None, allowed):
    want = plain.apply(params, x, mask).astype(jnp.float32)
    got = Attention(4, dtype=dtype, attention='xla').apply(params, x, mask)
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=tol, rtol=tol)


def test_cudnn_is_only_chosen_on_an_nvidia_gpu():
  q = jnp.zeros((2, 196, 4, 32), jnp.bfloat16)
  assert not cudnn_attention_applies(q, None)  # the test machine is a CPU


def _deep(shifted=False, drop_path_rate=0.0):
  """Stage 1 has 4 blocks: 4 scanned steps, or 2 of a plain and a shifted block."""
  enc = swin_config('tiny', img_size=64, embed_dim=16, depths=(1, 4, 2, 1),
                    num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2), shifted_windows=shifted,
                    drop_path_rate=drop_path_rate)
  return MixMAEConfig(encoder=enc, decoder=DecoderConfig(dim=32, depth=1, num_heads=4))


SCANNED = ComputeOptions(scan_blocks=True)
VARIANTS = (ComputeOptions(), SCANNED, ComputeOptions(scan_blocks=True, remat='block'),
            ComputeOptions(attention='plain', scan_blocks=True, remat='dots'),
            ComputeOptions(scan_blocks=False, remat='block'))


@pytest.mark.parametrize('shifted', [False, True])
def test_options_keep_the_params_layout(shifted):
  arch = _deep(shifted)
  rngs = {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(0)}
  images = jnp.zeros((2, 64, 64, 3))
  want = jax.eval_shape(MixMAE(arch, options=PLAIN).init, rngs, images)['params']
  for options in VARIANTS:
    got = jax.eval_shape(MixMAE(arch, options=options).init, rngs, images)['params']
    assert jax.tree.map(lambda s: s.shape, got) == jax.tree.map(lambda s: s.shape, want), options


def _stage(options, shifted=False, drop_path_rate=0.0):
  """Stage 1 of `_deep` (4 blocks, same-source mask) as a standalone module."""
  return swin.make_stages(_deep(shifted, drop_path_rate).encoder, jnp.float32, options)[1]


def _stage_inputs():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 32))
  source = mixing.stage_sources(jnp.array([[0, 1], [1, 0]]), 4)[1]
  return x, source


@pytest.mark.parametrize('shifted', [False, True])
def test_options_keep_the_function_and_its_gradients(shifted):
  """Scanned blocks, fused attention and every remat policy: the same outputs and gradients
  as the plain unrolled stage, from the same per-block params."""
  x, source = _stage_inputs()
  params = _stage(PLAIN, shifted).init(jax.random.PRNGKey(0), x, source)

  def outputs(options):
    stage = _stage(options, shifted)
    loss = lambda p, x: jnp.sum(jnp.sin(stage.apply(p, x, source, True)))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

  want = outputs(PLAIN)
  for options in VARIANTS[:2] if shifted else VARIANTS:
    got = outputs(options)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=str(options))


@pytest.mark.parametrize('period', [1, 2])
def test_stack_and_unstack_blocks_are_inverse(period):
  stage = {f'blocks_{j}': {'w': jnp.full((3, 2), j), 'b': jnp.arange(2) + j} for j in range(6)}
  stage['downsample'] = {'w': jnp.ones((4,))}
  stacked = block_scan.stack_blocks(stage, depth=6, period=period)
  assert set(stacked) == {block_scan.SCANNED, 'downsample'}
  assert set(stacked[block_scan.SCANNED]) == {f'blocks_{k}' for k in range(period)}
  assert stacked[block_scan.SCANNED]['blocks_0']['w'].shape == (6 // period, 3, 2)
  np.testing.assert_array_equal(stacked[block_scan.SCANNED][f'blocks_{period - 1}']['b'][1],
                                stage[f'blocks_{2 * period - 1}']['b'])
  back = block_scan.unstack_blocks(stacked, depth=6, period=period)
  assert jax.tree.structure(back) == jax.tree.structure(stage)
  for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(stage)):
    np.testing.assert_array_equal(got, want)


def test_scanned_stages_draw_drop_path_per_block():
  x, source = _stage_inputs()
  stage = _stage(SCANNED, drop_path_rate=0.5)
  params = stage.init(jax.random.PRNGKey(0), x, source)
  apply = jax.jit(lambda key, train: stage.apply(params, x, source, train,
                                                 rngs={'drop_path': key}), static_argnums=1)
  trained = [np.asarray(apply(jax.random.PRNGKey(s), True)) for s in range(3)]
  assert len({float(np.abs(t).sum()) for t in trained}) == 3  # stochastic depth in training ...
  evaluated = apply(jax.random.PRNGKey(0), False)
  np.testing.assert_array_equal(evaluated, apply(jax.random.PRNGKey(1), False))  # ... not in eval
  np.testing.assert_allclose(evaluated, _stage(PLAIN, drop_path_rate=0.5).apply(params, x, source),
                             atol=2e-5)


def test_remat_policy_lowers_the_memory_plan():
  """Rematerialisation trades FLOPs for memory: XLA's plan for a scanned stage's temporaries
  shrinks (on the CPU backend only the scanned form shows it; see PERFORMANCE.md)."""
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 32))
  source = mixing.stage_sources(jnp.array([[0, 1], [1, 0]]), 4)[1]
  params = jax.eval_shape(_stage(PLAIN).init, jax.random.PRNGKey(0), x, source)

  def temp_bytes(remat):
    stage = _stage(ComputeOptions(scan_blocks=True, remat=remat))
    grad = jax.grad(lambda p: jnp.sum(stage.apply(p, x, source, True)**2))
    return jax.jit(grad).lower(params).compile().memory_analysis().temp_size_in_bytes

  none, dots, block = temp_bytes('none'), temp_bytes('dots'), temp_bytes('block')
  assert block < dots < none, (none, dots, block)


def test_invalid_compute_options_name_the_field():
  from mixmae_jax.training import config_checks
  from mixmae_jax.training.config_defaults import pretraining_config
  c = pretraining_config('mixmae', size='base')
  c.model.attention, c.model.remat = 'flash', 'everything'
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(c, global_devices=8)
  assert "model.attention='flash'" in str(error.value)
  assert "model.remat='everything'" in str(error.value)
