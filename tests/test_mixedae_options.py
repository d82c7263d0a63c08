"""MixedAE's options for homologous recognition: where segment embeddings enter, what the
contrastive loss reads (projected features or TopK's scores), full mixing, the collapse
diagnostics, and old records reading as the new fields."""
import dataclasses
import json
import math
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax import architectures, objectives
from mixmae_jax.networks import layers, vit
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives import homologous, mixedae, mixing
from mixmae_jax.training import pretraining
from mixmae_jax.training.config_checks import ConfigError, validate
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run

ENCODER = vit.config('tiny', img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
ARCH = mixedae.MixedAEConfig(encoder=ENCODER, decoder=DecoderConfig(dim=24, depth=1, num_heads=3,
                                                                    norm_eps=1e-6))
L, S = 16, 4


def _params(arch, seed=0, scale=0.3):
  shapes = architectures.abstract_params(architectures.build_model(arch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _images(batch, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 32, 32, 3)), jnp.float32)


# ---------------- the diagnostics ----------------

def test_the_slot_code_floor_is_the_loss_of_simplex_codes_and_a_minimum():
  assert homologous.slot_code_floor(16, 4, 0.25) == pytest.approx(2.7226, abs=1e-3)
  source = mixing.partition_sources(jax.random.PRNGKey(0), 3, 64, 4)
  simplex = np.eye(4) - 0.25  # four unit-norm-up-to-scale vectors at cosine -1/3
  codes = jnp.asarray(simplex)[source]
  loss = float(mixedae.homologous_contrastive_loss(codes, source, 0.25))
  assert loss == pytest.approx(homologous.slot_code_floor(16, 4, 0.25), abs=1e-4)
  noisy = codes + 0.3 * jax.random.normal(jax.random.PRNGKey(1), codes.shape)
  assert float(mixedae.homologous_contrastive_loss(noisy, source, 0.25)) > loss + 0.01


def test_effective_rank_counts_the_directions_features_use():
  rng = np.random.default_rng(0)
  iso = rng.normal(size=(4000, 16))
  assert float(homologous.effective_rank(jnp.asarray(iso))) == pytest.approx(16, rel=0.05)
  line = rng.normal(size=(4000, 1)) * rng.normal(size=(1, 16))
  assert float(homologous.effective_rank(jnp.asarray(line))) == pytest.approx(1.0, abs=1e-3)
  four = np.eye(16)[rng.integers(0, 4, 4000)]  # 4 points: rank 3 after centring
  assert 2.5 < float(homologous.effective_rank(jnp.asarray(four.reshape(40, 100, 16)))) < 3.01


# ---------------- segment embeddings on queries and keys only ----------------

def test_qk_codes_shift_queries_and_keys_but_not_values():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  groups = jnp.asarray(rng.integers(0, 3, (2, 6)))
  codes = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  attn = layers.Attention(num_heads=2, attention='plain')
  params = attn.init(jax.random.PRNGKey(0), x)
  got, _ = attn.apply(params, x, modifier=layers.AttentionModifier(groups=groups,
                                                                   qk_codes=codes))
  kernel, bias = params['params']['qkv']['kernel'], params['params']['qkv']['bias']
  shifted = (x + codes[groups]) @ kernel + bias
  plain = x @ kernel + bias
  split = lambda t: jnp.moveaxis(t.reshape(2, 6, 3, 2, 4), 2, 0)  # noqa: E731
  q, k, _ = split(shifted)
  v = split(plain)[2]
  out = layers.attention_weights_and_values(q, k, v).reshape(2, 6, 8)
  want = out @ params['params']['proj']['kernel'] + params['params']['proj']['bias']
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_qk_scope_keeps_the_codes_out_of_the_input_but_trains_them():
  arch = dataclasses.replace(ARCH, segment_scope='qk', topk_blocks=(1,))
  model, params = architectures.build_model(arch), _params(arch)
  images, source = _images(8), mixing.partition_sources(jax.random.PRNGKey(3), 2, L, S)
  group = mixing.consecutive_groups(8, S)
  mixed = model.apply({'params': params}, images, source, group, method='mix')
  none = dataclasses.replace(arch, segment_scope='none')
  plain = {k: v for k, v in params.items() if k != 'segment_embed'}
  np.testing.assert_array_equal(
      mixed, architectures.build_model(none).apply({'params': plain}, images, source, group,
                                                    method='mix'))
  grads = jax.grad(lambda p: model.apply({'params': p}, images, source=source)['loss'])(params)
  assert float(jnp.abs(grads['segment_embed']).sum()) > 0


# ---------------- what the contrastive loss reads ----------------

def _contrastive_grads(arch):
  model, params = architectures.build_model(arch), _params(arch)
  images, source = _images(8), mixing.partition_sources(jax.random.PRNGKey(4), 2, L, S)
  out = model.apply({'params': params}, images, source=source)
  grads = jax.grad(lambda p: model.apply({'params': p}, images, source=source)['metrics'][
      'contrastive_loss'])(params)
  return out, grads


def test_the_attention_target_trains_the_scores_topk_ranks():
  """The loss reads the TopK block's head-averaged scores: it reaches that block's query/key
  projection, and nothing computed after the scores (its MLP, the final norm)."""
  arch = dataclasses.replace(ARCH, contrastive_target='attention', topk_blocks=(1,))
  out, grads = _contrastive_grads(arch)
  assert 'contrastive_gap' not in out['metrics'] and np.isfinite(out['metrics'][
      'contrastive_loss'])
  assert float(jnp.abs(grads['blocks_1']['attn']['qkv']['kernel']).sum()) > 0
  assert float(jnp.abs(grads['blocks_0']['attn']['qkv']['kernel']).sum()) > 0  # feeds block 1
  for leaf in jax.tree.leaves((grads['blocks_1']['mlp'], grads['norm'])):
    assert float(jnp.abs(leaf).sum()) == 0


def test_the_projection_head_is_what_the_feature_loss_reads():
  arch = dataclasses.replace(ARCH, contrastive_head='mlp', contrastive_head_dims=(16, 8))
  out, grads = _contrastive_grads(arch)
  assert grads['contrastive_head']['fc1']['kernel'].shape == (32, 16)
  assert grads['contrastive_head']['fc2']['kernel'].shape == (16, 8)
  assert float(jnp.abs(grads['contrastive_head']['fc2']['kernel']).sum()) > 0
  floor = homologous.slot_code_floor(4, 4, 0.25)
  assert out['metrics']['contrastive_gap'] == pytest.approx(
      float(out['metrics']['contrastive_loss']) - floor, abs=1e-5)
  assert 1.0 <= float(out['metrics']['feature_rank']) <= 32.0
  without = architectures.abstract_params(architectures.build_model(ARCH))
  assert 'contrastive_head' not in without


# ---------------- full mixing ----------------

def test_rotated_sources_place_every_image_once_per_position_and_share():
  source = mixing.partition_sources(jax.random.PRNGKey(5), 3, 16, 4)
  group = mixing.consecutive_groups(12, 4)
  rotated, groups = (np.asarray(a) for a in mixing.rotate_sources(source, group))
  assert rotated.shape == (12, 16) and groups.shape == (12, 4)
  for g in range(3):
    block = rotated[4 * g:4 * g + 4]  # the group's 4 samples
    np.testing.assert_array_equal(block[0], source[g])
    for pos in range(16):
      assert sorted(block[:, pos]) == [0, 1, 2, 3]  # each image once per position
    for row in block:
      assert all((row == slot).sum() == 4 for slot in range(4))  # each image its share
    np.testing.assert_array_equal(groups[4 * g:4 * g + 4], np.tile(group[g], (4, 1)))


def test_full_mixing_rebuilds_every_image_from_each_sample_it_is_in():
  arch = dataclasses.replace(ARCH, mixing_mode='full')
  model, params = architectures.build_model(arch), _params(arch)
  images, source = _images(8), mixing.partition_sources(jax.random.PRNGKey(6), 2, L, S)
  out = model.apply({'params': params}, images, source=source)
  assert out['pred'].shape == (8, L, 8 * 8 * 3) and out['source'].shape == (2, L)
  np.testing.assert_array_equal(out['mask'][1], (np.asarray(source)[0] != 1).astype(np.int32))
  group = mixing.consecutive_groups(8, S)
  rotated, groups = mixing.rotate_sources(source, group)
  sample, slot, image = (np.asarray(a) for a in mixedae.decoding_views(groups, arch))
  assert len(image) == 32 and sorted(image.tolist()) == sorted(list(range(8)) * 4)
  for v in range(32):  # each view reads its image's own tokens of that sample
    assert groups[sample[v], slot[v]] == image[v]
  seen = np.zeros((8, L), int)
  for v in range(32):
    seen[image[v]] += np.asarray(rotated)[sample[v]] == slot[v]
  np.testing.assert_array_equal(seen, 1)  # across its 4 samples an image shows every patch once
  compose = mixedae.flops_per_image(ARCH)
  full = mixedae.flops_per_image(arch)
  assert full['blocks'] == pytest.approx(4 * compose['blocks'])
  assert full['decoder_forward'] == pytest.approx(4 * compose['decoder_forward'])


# ---------------- config ----------------

@pytest.mark.parametrize('change,message', [
    (dict(segment_scope='queries'), "segment_scope='queries'"),
    (dict(contrastive_target='logits'), "contrastive_target='logits'"),
    (dict(contrastive_head='deep'), "contrastive_head='deep'"),
    (dict(mixing_mode='half'), "mixing_mode='half'"),
    (dict(segment_scope='qk', homologous_attention='off'), "needs homologous_attention='topk'"),
    (dict(contrastive_target='attention', homologous_attention='oracle'),
     "needs homologous_attention='topk'"),
    (dict(contrastive_target='attention', contrastive_head='mlp'), "set contrastive_head='none'"),
    (dict(contrastive_head_dims=(0, 8)), 'contrastive_head_dims=(0, 8)'),
])
def test_bad_options_are_refused_before_compiling_naming_the_field(change, message):
  config = pretraining_config('mixedae', 'vit', 'base')
  config.model.objective.update(change)
  with pytest.raises(ConfigError, match=re.escape(message)):
    validate(config, global_devices=8)


def test_every_option_is_a_config_field_and_a_recipe_switch():
  from mixmae_jax.cli import config_files  # pylint: disable=import-outside-toplevel
  config = config_files.load(config_files.resolve(
      'mixedae_vit_base_800ep:segments_qk,head_mlp,full_mixing,runlocal'))
  arch = objectives.objective_config(config.model)
  assert (arch.segment_scope, arch.contrastive_head, arch.mixing_mode) == ('qk', 'mlp', 'full')
  validate(config, global_devices=1)


def test_records_written_with_the_old_segment_switch_still_load():
  record = architectures.to_dict(ARCH)
  for old, new in ((True, 'input'), (False, 'none')):
    legacy = {k: v for k, v in record.items() if k != 'segment_scope'}
    legacy['segment_embeddings'] = old
    for k in ('contrastive_target', 'contrastive_head', 'contrastive_head_dims', 'mixing_mode'):
      legacy.pop(k)
    assert architectures.from_dict(json.loads(json.dumps(legacy))).segment_scope == new


# ---------------- training ----------------

def _run_config(**objective):
  c = shrink_for_local_run(pretraining_config('mixedae', 'vit', 'tiny'))
  c.batch_size, c.num_train_steps, c.log_every_steps = 32, 4, 1  # 8 devices x 4 images
  c.checkpoint_every_steps, c.reconstruction_every_steps, c.reconstruction_images = 2, 0, 0
  c.model.objective.update(objective)
  return c


def test_a_resumed_full_mixing_attention_target_run_repeats_the_uninterrupted_one(tmp_path):
  config = _run_config(mixing_mode='full', contrastive_target='attention', segment_scope='qk')
  pretraining.train_and_evaluate(config, str(tmp_path))
  read = lambda: [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]  # noqa
  first = read()
  assert {'contrastive_loss', 'topk_accuracy', 'feature_rank'} <= set(first[-1])
  assert all(math.isfinite(r['loss']) for r in first)
  shutil.rmtree(tmp_path / 'checkpoints' / '4')
  pretraining.train_and_evaluate(config, str(tmp_path))
  again = read()
  assert [r['step'] for r in again] == [1, 2, 3, 4]
  for a, b in zip(first, again):
    assert a['loss'] == b['loss'] and a['grad_norm'] == b['grad_norm']
