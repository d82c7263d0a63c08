"""Scanned stages whose params stay stacked in the training state: the same params, function,
gradients and weight decay as the per-block layout, and checkpoints that cross layouts.

Covers `block_scan.relayout` on params and AdamW's state (periods 1 and 2), the stacked model's
init and gradients against the per-block scanned model's, the weight-decay mask, a pretraining
run saved stacked that resumes unrolled and back, and `load` / fine-tuning reading a stacked
checkpoint by its per-block names.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_pretraining_config

import mixmae_jax
from mixmae_jax.networks import block_scan, swin
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.objectives.mixmae import MixMAE, MixMAEConfig
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining as train_loop
from mixmae_jax.training.optimizer import weight_decay_mask

PER_BLOCK = ComputeOptions(scan_blocks=True)
STACKED = ComputeOptions(scan_blocks=True, stacked_params=True)


def _arch(shifted: bool) -> MixMAEConfig:
  enc = swin.config('tiny', img_size=64, embed_dim=16, depths=(2, 4, 2, 1),
                    num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2), shifted_windows=shifted)
  return MixMAEConfig(encoder=enc, decoder=DecoderConfig(dim=32, depth=1, num_heads=4))


def _init(options, shifted):
  rngs = {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(1)}
  model = MixMAE(_arch(shifted), options=options)
  return model, jax.jit(model.init)(rngs, jnp.zeros((2, 64, 64, 3)))['params']


def _equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('shifted', [False, True])
def test_the_stacked_state_is_the_per_block_state_relaid_out(shifted):
  """Init draws the same params in both layouts; relayout converts params and AdamW's moments
  both ways exactly, and names each stacked stage with its period."""
  _, per_block = _init(PER_BLOCK, shifted)
  _, stacked = _init(STACKED, shifted)
  stages = block_scan.scanned_stages(stacked)
  # a stage of one block is never scanned; standard Swin alternates windows (period 2) where a
  # window is smaller than the grid, and a stage of 2 blocks at period 2 stays unrolled
  want = ({'layers_1': 2, 'layers_2': 1} if shifted else
          {'layers_0': 1, 'layers_1': 1, 'layers_2': 1})
  assert stages == want and block_scan.scanned_stages(per_block) == {}
  _equal(block_scan.relayout(per_block, stages), stacked)
  _equal(block_scan.to_per_block(stacked), per_block)
  tx = optax.adamw(1e-3, mask=weight_decay_mask)
  state = tx.update(jax.tree.map(jnp.ones_like, per_block), tx.init(per_block), per_block)[1]
  moved = block_scan.relayout(state, stages)
  _equal(moved, tx.update(jax.tree.map(jnp.ones_like, stacked), tx.init(stacked), stacked)[1])
  _equal(block_scan.relayout(moved, {}), state)


def test_weight_decay_spares_a_stacked_stage_s_biases_and_norms():
  _, per_block = _init(PER_BLOCK, False)
  _, stacked = _init(STACKED, False)
  stages = block_scan.scanned_stages(stacked)
  mask = weight_decay_mask(stacked)
  _equal(mask, block_scan.relayout(weight_decay_mask(per_block), stages))
  block = mask['layers_1'][block_scan.SCANNED]['blocks_0']
  assert block['attn']['qkv']['kernel'] and not block['attn']['qkv']['bias']
  assert not block['norm1']['scale']


@pytest.mark.parametrize('shifted', [False, True])
def test_the_stacked_model_computes_the_same_loss_and_gradients(shifted):
  model_pb, per_block = _init(PER_BLOCK, shifted)
  model_st, stacked = _init(STACKED, shifted)
  images = jax.random.normal(jax.random.PRNGKey(2), (4, 64, 64, 3))
  rngs = {'mask': jax.random.PRNGKey(3), 'drop_path': jax.random.PRNGKey(4)}

  def loss_and_grads(model, params):
    loss = lambda p: model.apply({'params': p}, images, train=True, rngs=rngs)['loss']  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)

  loss_pb, grads_pb = loss_and_grads(model_pb, per_block)
  loss_st, grads_st = loss_and_grads(model_st, stacked)
  np.testing.assert_allclose(loss_st, loss_pb, rtol=1e-6)
  grads_st = block_scan.to_per_block(grads_st)
  for a, b in zip(jax.tree.leaves(grads_st), jax.tree.leaves(grads_pb)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def _config(scan: bool, sharding: str):
  # no stochastic depth: scanned and unrolled blocks draw their drop-path masks differently
  return tiny_pretraining_config(**{
      'model.scan_blocks': scan, 'state_sharding': sharding, 'model.encoder.depths': (2, 2, 2, 1),
      'model.encoder.drop_path_rate': 0.0, 'num_train_steps': 6, 'checkpoint_every_steps': 2,
      'log_every_steps': 1, 'reconstruction_images': 0, 'keep_checkpoints': 5})


def _losses(workdir):
  return {r['step']: r['loss'] for r in map(json.loads, (workdir / 'metrics.jsonl').open())}


@pytest.mark.parametrize('sharding', ['replicated', 'sharded'])
def test_a_run_saved_stacked_resumes_unrolled_and_back(tmp_path, sharding):
  """In either state layout across devices (8 here): a scanned run's step-2 checkpoint
  (stacked) resumes unrolled to 6; that run's step-4
  checkpoint (per block) resumes scanned. Each checkpoint records its layout, and every resumed
  step trains on the state the uninterrupted scanned run had: the same losses, to rounding."""
  straight, switched = tmp_path / 'straight', tmp_path / 'switched'
  train_loop.train_and_evaluate(_config(True, sharding), str(straight))
  shutil.copytree(straight, switched)
  directory = checkpointing.checkpoint_dir(str(switched))
  for scan, lose in ((False, (4, 6)), (True, (6,))):
    for step in lose:
      shutil.rmtree(os.path.join(directory, str(step)))
    train_loop.train_and_evaluate(_config(scan, sharding), str(switched))
  recorded = {s: checkpointing.read_meta(directory, s)[1]['scanned_stages'] for s in (2, 4, 6)}
  stacked = {'layers_0': 1, 'layers_1': 1, 'layers_2': 1}
  assert recorded == {2: stacked, 4: {}, 6: stacked}
  want, got = _losses(straight), _losses(switched)
  assert sorted(got) == list(range(1, 7))
  np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)],
                             rtol=1e-5)
  # tools see per-block names, from either layout, with the same values
  _, params = mixmae_jax.load(str(switched), step=6)
  assert 'blocks_1' in params['layers_0'] and block_scan.scanned_stages(params) == {}
  ckpt = checkpointing.Checkpointer(directory, keep=None, create=False)
  raw = ckpt.restore(6, jax.eval_shape(lambda: block_scan.relayout(params, stacked)))[0]
  ckpt.close()
  _equal(block_scan.to_per_block(raw), jax.tree.map(np.asarray, params))


def test_a_scanned_run_may_keep_its_params_per_block(tmp_path):
  """`model.stacked_params=False`: the scanned step stacks and splits per-block params itself
  (the fallback where a compiler fails on the stacked state); its checkpoints are per block,
  and it trains as the stacked run does, to rounding."""
  stacked, per_block = tmp_path / 'stacked', tmp_path / 'per_block'
  train_loop.train_and_evaluate(_config(True, 'replicated'), str(stacked))
  config = _config(True, 'replicated')
  config.model.stacked_params = False
  train_loop.train_and_evaluate(config, str(per_block))
  directory = checkpointing.checkpoint_dir(str(per_block))
  assert checkpointing.read_meta(directory, 6)[1]['scanned_stages'] == {}
  want, got = _losses(stacked), _losses(per_block)
  np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)],
                             rtol=1e-5)
