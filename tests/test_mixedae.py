"""MixedAE: the mixing law, unmixing, TopK attention, the contrastive loss against numpy, and the
equivalence with MAE under the oracle mask; configs, pictures and FLOPs."""
import dataclasses
import importlib.util
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax import architectures, objectives
from mixmae_jax.networks import layers, vit
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives import mae, mixedae, mixing
from mixmae_jax.training import pretraining
from mixmae_jax.training.config_checks import ConfigError, validate
from mixmae_jax.training.config_defaults import pretraining_config

ENCODER = vit.config('tiny', img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
DECODER = DecoderConfig(dim=24, depth=2, num_heads=3, norm_eps=1e-6)
ARCH = mixedae.MixedAEConfig(encoder=ENCODER, decoder=DECODER)
L, S = 16, 4  # (32 / 8)^2 patches, 1 / (1 - 0.75) images per mixed sample


def _random_params(arch, seed=0, scale=0.3):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _images(batch, seed=1, size=32):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


# ---------------- mixing ----------------

def test_each_image_supplies_exactly_l_over_s_positions_drawn_per_sample():
  source = np.asarray(mixing.partition_sources(jax.random.PRNGKey(0), 64, 196, 4))
  assert source.shape == (64, 196) and source.dtype == np.int32
  for slot in range(4):
    assert np.all((source == slot).sum(axis=1) == 49)
  assert len({row.tobytes() for row in source}) == 64  # per sample, not per batch
  np.testing.assert_array_equal(
      source, mixing.partition_sources(jax.random.PRNGKey(0), 64, 196, 4))  # reproducible
  assert not np.array_equal(source, mixing.partition_sources(jax.random.PRNGKey(1), 64, 196, 4))
  # every image sees every position a quarter of the time, independently of the other rows
  many = np.asarray(mixing.partition_sources(jax.random.PRNGKey(2), 4000, 16, 4))
  for slot in range(4):
    np.testing.assert_allclose((many == slot).mean(axis=0), 0.25, atol=0.03)
  first, second = many[0::2] == 0, many[1::2] == 0
  np.testing.assert_allclose((first & second).mean(), 0.25 * 0.25, atol=0.01)


def test_mixing_gathers_each_position_from_the_image_of_its_slot():
  x = np.random.default_rng(0).normal(size=(8, 16, 5)).astype(np.float32)
  group = mixing.consecutive_groups(8, 4)
  np.testing.assert_array_equal(group, [[0, 1, 2, 3], [4, 5, 6, 7]])
  source = mixing.partition_sources(jax.random.PRNGKey(3), 2, 16, 4)
  mixed = np.asarray(mixing.mix_tokens(jnp.asarray(x), source, group))
  assert mixed.shape == (2, 16, 5)
  for m in range(2):
    for pos in range(16):
      np.testing.assert_array_equal(mixed[m, pos], x[group[m, source[m, pos]], pos])


@pytest.mark.parametrize('shuffled', [False, True])
def test_unmixing_is_the_inverse_gather(shuffled):
  batch = 12
  x = jnp.asarray(np.random.default_rng(1).normal(size=(batch, 16, 3)), jnp.float32)
  group = mixing.consecutive_groups(batch, 4)
  if shuffled:  # any table holding each image once, not only neighbours
    group = jnp.asarray(np.random.default_rng(2).permutation(batch).reshape(3, 4))
  source = mixing.partition_sources(jax.random.PRNGKey(4), 3, 16, 4)
  back, visible = mixing.unmix_tokens(mixing.mix_tokens(x, source, group), source, group)
  visible = np.asarray(visible)
  assert back.shape == x.shape and visible.shape == (batch, 16)
  assert np.all(visible.sum(axis=1) == 4)  # each image its own L / S positions
  np.testing.assert_array_equal(np.asarray(back)[visible], np.asarray(x)[visible])
  # the images of a mixed sample cover its positions exactly once
  sample, slot = map(np.asarray, mixing.image_places(group))
  np.testing.assert_array_equal(np.asarray(group)[sample, slot], np.arange(batch))
  for m in range(3):
    np.testing.assert_array_equal(visible[sample == m].sum(axis=0), 1)


# ---------------- homologous attention ----------------

def _qkv(seed, batch=2, n=12, heads=3, dim=8):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(batch, n, heads, dim)), jnp.float32) for _ in range(3)]


def _numpy_top_k_attention(q, k, v, top_k):
  q, k, v = map(np.asarray, (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  order = np.argsort(-logits, axis=-1)[..., :top_k]
  keep = np.zeros(logits.shape, bool)
  np.put_along_axis(keep, order, True, axis=-1)
  w = np.where(keep, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', w, v), keep


@pytest.mark.parametrize('top_k', [1, 3, 12])
def test_topk_keeps_exactly_k_keys_per_query(top_k):
  q, k, v = _qkv(0)
  logits = layers.attention_logits(q, k)
  keep = np.asarray(layers.top_k_threshold_mask(logits, top_k))
  assert keep.shape == (2, 3, 12, 12)
  np.testing.assert_array_equal(keep.sum(-1), top_k)
  want, want_keep = _numpy_top_k_attention(q, k, v, top_k)
  np.testing.assert_array_equal(keep, want_keep)
  groups = jnp.asarray(np.random.default_rng(1).integers(0, 3, (2, 12)))
  same = np.asarray(groups)[:, None, :, None] == np.asarray(groups)[:, None, None, :]
  for method in layers.TOP_K_METHODS:
    with jax.default_matmul_precision('highest'):
      out, stats = layers.top_k_attention(q, k, v, top_k, method, groups=groups)
    np.testing.assert_allclose(out, want, atol=1e-5)
    # the reported TopK accuracy is the share of kept keys in the query's group
    assert float(stats['top_k_precision']) == pytest.approx(
        (want_keep & same).sum() / want_keep.sum(), abs=1e-6)


def test_topk_over_all_keys_is_plain_attention_and_gradients_flow():
  q, k, v = _qkv(2)
  with jax.default_matmul_precision('highest'):
    out, _ = layers.top_k_attention(q, k, v, 12)
    np.testing.assert_allclose(out, layers.attention_weights_and_values(q, k, v), atol=1e-6)
    grads = [jax.grad(lambda q_: jnp.sum(layers.top_k_attention(q_, k, v, 4, m)[0]**2))(q)  # noqa: B023
             for m in layers.TOP_K_METHODS]
  np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
  assert float(jnp.abs(grads[0]).sum()) > 0


def test_topk_accuracy_is_reported_and_remat_computes_the_same():
  params = _random_params(ARCH)
  images = jnp.asarray(_images(8))
  source = mixing.partition_sources(jax.random.PRNGKey(5), 2, L, S)
  losses = []
  for remat in ('none', 'block'):
    model = architectures.build_model(ARCH, options=ComputeOptions(remat=remat))
    out = model.apply({'params': params}, images, source=source)
    assert set(out['metrics']) == {'reconstruction_loss', 'contrastive_loss', 'topk_accuracy',
                                   'contrastive_gap', 'feature_rank'}
    assert 0.0 < float(out['metrics']['topk_accuracy']) <= 1.0
    assert float(out['loss']) == pytest.approx(float(out['metrics']['reconstruction_loss']) +
                                               float(out['metrics']['contrastive_loss']),
                                               rel=1e-6)
    losses.append(float(out['loss']))
  assert losses[0] == pytest.approx(losses[1], rel=1e-6)


# ---------------- the homologous contrastive loss ----------------

def _numpy_contrastive(features, source, temperature):
  """Written from the definition, one anchor at a time."""
  total, count = 0.0, 0
  for f, src in zip(np.asarray(features, np.float64), np.asarray(source)):
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T / temperature
    for i in range(len(f)):
      others = [a for a in range(len(f)) if a != i]
      log_denominator = np.log(np.sum(np.exp(sim[i, others])))
      positives = [p for p in others if src[p] == src[i]]
      total += -np.mean([sim[i, p] - log_denominator for p in positives])
      count += 1
  return total / count


@pytest.mark.parametrize('temperature', [0.25, 1.0])
def test_contrastive_loss_matches_numpy(temperature):
  rng = np.random.default_rng(0)
  features = rng.normal(size=(3, 16, 8)).astype(np.float32)
  source = mixing.partition_sources(jax.random.PRNGKey(6), 3, 16, 4)
  with jax.default_matmul_precision('highest'):
    got = mixedae.homologous_contrastive_loss(jnp.asarray(features), source, temperature)
  assert float(got) == pytest.approx(_numpy_contrastive(features, source, temperature),
                                     rel=1e-5)


def test_contrastive_loss_is_low_when_images_are_told_apart():
  source = mixing.partition_sources(jax.random.PRNGKey(7), 2, 16, 4)
  separated = jax.nn.one_hot(source, 8) * 5.0  # each image's patches share one direction
  mixed_up = jax.nn.one_hot(jnp.roll(source, 1, axis=1), 8) * 5.0
  assert float(mixedae.homologous_contrastive_loss(separated, source, 0.25)) < \
      float(mixedae.homologous_contrastive_loss(mixed_up, source, 0.25)) - 1.0


# ---------------- the equivalence with MAE ----------------

ORACLE = dataclasses.replace(ARCH, homologous_attention='oracle', segment_scope='none',
                             contrastive_weight=0.0)


def _mixed_features(model, params, images, source):
  def fn(m, images, source):
    group = mixing.consecutive_groups(images.shape[0], S)
    return m.encode_mixed(m.mix(images, source, group), source, False)[0]
  return model.apply({'params': params}, images, source, method=fn)


def test_oracle_mixing_encodes_each_image_as_mae_encodes_its_visible_patches():
  """Same params, same visible sets: each image's patch features and its cls feature equal MAE's
  encoder run on that image's visible patches alone; the loss and predictions are MAE's."""
  model, mae_arch = architectures.build_model(ORACLE), mae.MAEConfig(encoder=ENCODER,
                                                                     decoder=DECODER)
  mae_model = architectures.build_model(mae_arch)
  params = _random_params(ORACLE)
  assert set(params) == set(architectures.abstract_params(mae_model))  # MAE's params exactly
  batch = 8
  images = jnp.asarray(_images(batch))
  source = mixing.partition_sources(jax.random.PRNGKey(8), batch // S, L, S)
  group = mixing.consecutive_groups(batch, S)
  _, visible = mixing.unmix_tokens(jnp.zeros((batch // S, L, 1)), source, group)
  mask = (~np.asarray(visible)).astype(np.int32)  # MAE's mask: 1 = removed
  with jax.default_matmul_precision('highest'):
    z = np.asarray(_mixed_features(model, params, images, source))  # [M, S + L, D]
    order = mae.shuffle_order(jnp.asarray(mask))
    want = np.asarray(mae_model.apply({'params': params}, images, order,
                                      method=lambda m, i, o: m.encode_visible(i, o, False)))
    out = model.apply({'params': params}, images, source=source)
    mae_out = mae_model.apply({'params': params}, images, mask=mask)
  src = np.asarray(source)
  for j in range(batch):
    m, slot = divmod(j, S)
    own = z[m, S:][src[m] == slot]  # the image's patch features, raster order
    np.testing.assert_allclose(own, want[j, 1:], atol=2e-5)
    np.testing.assert_allclose(z[m, slot], want[j, 0], atol=2e-5)  # its own cls token
  np.testing.assert_array_equal(out['mask'], mask)
  np.testing.assert_allclose(out['pred'], mae_out['pred'], atol=2e-5)
  assert float(out['loss']) == pytest.approx(float(mae_out['loss']), rel=1e-5)


@pytest.mark.parametrize('change', [dict(homologous_attention='off'),
                                    dict(homologous_attention='topk'),
                                    dict(segment_scope='input')])
def test_without_the_oracle_or_with_segments_images_see_each_other(change):
  """The equivalence test can fail: naive mixing, TopK and segment embeddings all change the
  features."""
  arch = dataclasses.replace(ORACLE, **change)
  params = _random_params(arch)
  images = jnp.asarray(_images(8))
  source = mixing.partition_sources(jax.random.PRNGKey(9), 2, L, S)
  oracle = {k: v for k, v in params.items() if k != 'segment_embed'}
  base = np.asarray(_mixed_features(architectures.build_model(ORACLE), oracle, images, source))
  other = np.asarray(_mixed_features(architectures.build_model(arch), params, images, source))
  assert np.abs(base - other).max() > 1e-3


# ---------------- the model around it ----------------

def test_params_segment_embeddings_and_no_weight_decay():
  params = architectures.abstract_params(architectures.build_model(ARCH))
  assert params['segment_embed'].shape == (S, 32)
  assert set(params) - {'segment_embed'} == set(architectures.abstract_params(
      architectures.build_model(mae.MAEConfig(encoder=ENCODER, decoder=DECODER))))
  assert mixedae.NO_WEIGHT_DECAY == {'segment_embed'}
  assert mixedae.batch_multiple(ARCH)[0] == 4


def test_an_explicit_source_must_give_each_image_its_share():
  model = architectures.build_model(ARCH)
  params = _random_params(ARCH)
  bad = np.zeros((2, L), np.int32)
  with pytest.raises(ValueError, match='exactly 4 times per row'):
    model.apply({'params': params}, jnp.asarray(_images(8)), source=bad)
  with pytest.raises(ValueError, match='groups of 4'):
    model.apply({'params': params}, jnp.asarray(_images(6)), rngs={'mask': jax.random.PRNGKey(0)})


def test_a_step_s_masks_come_from_the_mask_stream():
  model = architectures.build_model(ARCH)
  params = _random_params(ARCH)
  images = jnp.asarray(_images(8))
  a, b, c = (model.apply({'params': params}, images, rngs={'mask': jax.random.PRNGKey(k)})
             for k in (0, 0, 1))
  np.testing.assert_array_equal(a['source'], b['source'])
  assert not np.array_equal(a['source'], c['source'])
  assert float(a['loss']) == float(b['loss'])


def test_pictures_show_every_image_of_each_mixed_sample():
  model = architectures.build_model(ARCH)
  params = _random_params(ARCH)
  images = _images(8)
  out = jax.tree.map(np.asarray, model.apply({'params': params}, jnp.asarray(images),
                                             rngs={'mask': jax.random.PRNGKey(0)}))
  order, columns = mixedae.picture_columns(images, out, ARCH)
  assert list(order) == list(range(8))
  titles = [t for t, _ in columns]
  assert titles == ['original', 'mixed input', 'own patches', 'reconstruction', 'recon + own']
  mixed, own = columns[1][1], columns[2][1]
  assert mixed.shape == own.shape == (8, 32, 32, 3)
  visible = np.kron(1 - out['mask'].reshape(8, 4, 4), np.ones((8, 8)))[..., None] == 1
  for j in range(8):  # a mixed input shows each of its images at that image's own patches
    np.testing.assert_array_equal(np.where(visible[j], mixed[j], 0),
                                  np.where(visible[j], images[j], 0))
  np.testing.assert_array_equal(mixed[0], mixed[3])


def test_config_fields_and_problems_name_the_field():
  config = pretraining_config('mixedae', 'vit', 'base')
  validate(config, global_devices=8)
  arch = objectives.objective_config(config.model)
  assert (arch.num_sources, arch.share, arch.num_keys) == (4, 49, 49)
  assert arch.homologous_blocks == tuple(range(12)) and arch.sequence_length == 200
  for field, value, message in [
      ('mask_ratio', 0.7, 'objective.mask_ratio=0.7'),
      ('homologous_attention', 'sometimes', "homologous_attention='sometimes'"),
      ('topk_blocks', (0, 12), 'blocks [12] do not exist'),
      ('topk_keys', 201, 'topk_keys=201'),
      ('topk_method', 'sort', "topk_method='sort'"),
      ('contrastive_temperature', 0.0, 'contrastive_temperature=0.0'),
  ]:
    bad = pretraining_config('mixedae', 'vit', 'base')
    bad.model.objective[field] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
      validate(bad, global_devices=8)
  odd = pretraining_config('mixedae', 'vit', 'base')
  odd.batch_size = 8 * 6  # 6 per device: not groups of 4
  with pytest.raises(ConfigError, match='groups of 1 / \\(1 - mask_ratio\\) = 4 images'):
    validate(odd, global_devices=8)
  swin = pretraining_config('mixedae', 'swin', 'base')
  with pytest.raises(ConfigError, match='use vit'):
    validate(swin, global_devices=8)


def test_flops_count_the_longer_attention_and_the_contrastive_loss():
  """ViT-B/16: the encoder runs 4 images as one sequence of 200 tokens (attention 4x MAE's per
  image), plus the similarities of the contrastive loss; the decoder is MAE's."""
  ours, theirs = mixedae.flops_per_image(mixedae.MixedAEConfig()), mae.flops_per_image(
      mae.MAEConfig())
  assert ours['train'] == pytest.approx(3 * ours['forward'])
  assert ours['decoder_forward'] == pytest.approx(theirs['decoder_forward'])
  assert ours['contrastive'] > 0 and ours['encoder_forward'] > theirs['encoder_forward']
  assert 1.0 < ours['train'] / theirs['train'] < 1.05
  off = mixedae.flops_per_image(mixedae.MixedAEConfig(contrastive_weight=0.0))
  assert off['contrastive'] == 0.0 and off['train'] < ours['train']


def test_the_whole_model_is_jittable_with_drop_path_and_gradients():
  arch = dataclasses.replace(ARCH, encoder=dataclasses.replace(ENCODER, drop_path_rate=0.1))
  model = architectures.build_model(arch)
  params = _random_params(arch)
  images = jnp.asarray(_images(8))

  @jax.jit
  def loss_and_grads(p, key):
    rngs = {'mask': key, 'drop_path': jax.random.fold_in(key, 1)}
    return jax.value_and_grad(lambda p_: model.apply({'params': p_}, images, train=True,
                                                     rngs=rngs)['loss'])(p)
  loss, grads = loss_and_grads(params, jax.random.PRNGKey(0))
  assert np.isfinite(float(loss))
  assert float(jnp.abs(grads['segment_embed']).sum()) > 0
  assert float(jnp.abs(grads['blocks_0']['attn']['qkv']['kernel']).sum()) > 0



# ---------------- training, measurement ----------------

def test_the_demo_pretrains_with_falling_losses_rising_topk_accuracy_and_pictures(tmp_path):
  """configs/mixedae_demo.py as the README runs it (300 steps of 32 shipped photos), on 8 fake
  devices of 4 images: one mixed sequence each. Homologous recognition learns slowly, so a
  shorter schedule does not show the TopK accuracy rising reliably."""
  path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'mixedae_demo.py'
  spec = importlib.util.spec_from_file_location('mixedae_demo', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.checkpoint_every_steps, config.reconstruction_every_steps = 300, 300
  pretraining.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  first, last = records[:2], records[-2:]
  mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
  for key in ('loss', 'reconstruction_loss', 'contrastive_loss'):
    assert mean(last, key) < mean(first, key) - 0.02, (key, records)
  assert mean(last, 'topk_accuracy') > mean(first, 'topk_accuracy') + 0.01, records
  assert (tmp_path / 'reconstructions' / 'step_0000300.png').exists()
