"""Encoder/decoder structure, parameter counts, masked attention and the loss formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax import mixing
from mixmae_jax.architecture import (ClassifierConfig, DecoderConfig, MixMAEConfig, SwinConfig,
                                     swin_config)
from mixmae_jax.objectives.mixmae import MixMAE
from mixmae_jax.swin import PatchMerging, SwinEncoder

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
