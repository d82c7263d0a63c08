"""The sharded (FSDP) state layout on 8 fake CPU devices: the same numbers as the replicated one,
a fraction of the state per device, and checkpoints that move between the layouts."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny_pretraining_config
from jax.sharding import PartitionSpec as P

from mixmae_jax import architectures
from mixmae_jax.training import checkpointing, parallel, pretraining
from mixmae_jax.training.config_checks import pretraining_arch
from mixmae_jax.training.optimizer import adamw, warmup_cosine_schedule
from mixmae_jax.training.train_step import AXIS, make_train_step

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL_LEAVES = 256  # shard nearly everything of the tiny test model


def _config(**overrides):
  return tiny_pretraining_config(**overrides)


def _model_and_schedule(config):
  objective, arch = pretraining_arch(config)
  return objective, arch, architectures.build_model(arch), warmup_cosine_schedule(1e-3, 2, 20)


def _setups(config):
  objective, arch, model, schedule = _model_and_schedule(config)
  config.state_sharding = 'replicated'
  replicated = pretraining.step_setup(config, objective, arch, model, schedule)
  config.state_sharding = 'sharded'
  sharded = pretraining.step_setup(config, objective, arch, model, schedule)
  # the tiny model's leaves are below the production threshold: split them all the same
  layout = parallel.ShardedLayout(sharded.abstract_state, min_size=SMALL_LEAVES)
  tx = adamw(schedule, weight_decay=config.weight_decay, b1=0.9, b2=0.95,
             grad_clip_norm=config.grad_clip_norm, no_decay_names=objective.NO_WEIGHT_DECAY,
             global_norm=layout.collectives.norm)
  step = make_train_step(model, tx, schedule, pixel_mean=config.data.mean,
                         pixel_std=config.data.std, rng_streams=objective.RNG_STREAMS,
                         collectives=layout.collectives)
  return replicated, (layout, step)


def _run(layout, train_step, host_state, steps=10):
  step = layout.wrap(train_step)
  state, rng = layout.place_state(host_state), layout.place_rng(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).integers(0, 256, (steps, 16, 64, 64, 3), dtype=np.uint8)
  history = []
  for i in range(steps):
    state, metrics = step(state, layout.place_batch({'image': images[i]}), rng)
    history.append({k: float(np.asarray(v)[0]) for k, v in metrics.items()})
  return state, history


@pytest.mark.parametrize('clip', [0.0, 1e-3])
def test_sharded_and_replicated_steps_give_the_same_numbers(clip):
  """Ten steps from the same state and batches; with a tiny clip norm every step is clipped,
  which needs the global gradient norm across the slices."""
  replicated, (layout, sharded_step) = _setups(_config(grad_clip_norm=clip))
  split = [s for s in jax.tree.leaves(layout.specs.params) if AXIS in s]
  assert len(split) > 20  # the test means something: most leaves are split
  host = jax.device_get(jax.jit(replicated.init)())
  a_state, a = _run(replicated.layout, replicated.train_step, host)
  b_state, b = _run(layout, sharded_step, host)
  for x, y in zip(a, b):
    for key in ('loss', 'grad_norm', 'param_norm'):
      assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
  assert a[-1]['loss'] < a[0]['loss']
  for x, y in zip(jax.tree.leaves(replicated.layout.for_saving(a_state.params)),
                  jax.tree.leaves(jax.device_get(b_state.params))):
    np.testing.assert_allclose(x, y, atol=2e-6, rtol=1e-5)


def test_the_state_per_device_shrinks_by_about_the_device_count():
  """XLA's memory plan for the step's arguments (params, optimizer state, batch) per device."""
  replicated, (layout, sharded_step) = _setups(_config())

  def argument_bytes(lay, step):
    state = replicated.abstract_state
    images = jax.ShapeDtypeStruct((16, 64, 64, 3), np.uint8)
    inputs = lay.abstract_inputs(state, {'image': images},
                                 jax.ShapeDtypeStruct((2,), np.uint32))
    return lay.wrap(step).lower(*inputs).compile().memory_analysis().argument_size_in_bytes

  whole = argument_bytes(replicated.layout, replicated.train_step)
  split = argument_bytes(layout, sharded_step)
  assert whole / split > 6, (whole, split)


def test_shard_specs_split_large_leaves_on_a_divisible_dimension():
  assert parallel.shard_spec((768, 2304), 8) == P(None, AXIS)
  assert parallel.shard_spec((3072, 768), 8) == P(AXIS)
  assert parallel.shard_spec((768,), 8) == P()  # small: whole on every device
  assert parallel.shard_spec((1000, 77), 8) == P(AXIS)
  assert parallel.shard_spec((999, 77), 8) == P()  # nothing divides
  assert parallel.shard_spec((4096, 4096), 1) == P()


def _losses(workdir):
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return {r['step']: r['loss'] for r in map(json.loads, lines)}


def test_checkpoints_move_between_the_layouts(tmp_path):
  """Sharded arrays are saved as they lie (each device's slice) and a run resumes them under
  the other layout, and back, with the losses of a run that never changed layout."""
  flags = dict(num_train_steps=6, log_every_steps=1, checkpoint_every_steps=2,
               keep_checkpoints=5, reconstruction_images=0)
  pretraining.train_and_evaluate(_config(**flags), str(tmp_path / 'straight'))
  moved = tmp_path / 'moved'
  for start, layout in ((0, 'sharded'), (2, 'replicated'), (4, 'sharded')):
    for later in (4, 6):  # resume at `start`, as if the run had stopped there
      if later > start:
        shutil.rmtree(moved / 'checkpoints' / str(later), ignore_errors=True)
    pretraining.train_and_evaluate(_config(state_sharding=layout, **flags), str(moved))
  want, got = _losses(tmp_path / 'straight'), _losses(moved)
  assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
  for step in want:
    assert got[step] == pytest.approx(want[step], rel=1e-5), step
  manager = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(moved)))
  config = _config(state_sharding='sharded')
  abstract = jax.eval_shape(pretraining.step_setup(config, *_model_and_schedule(config)).init)
  layout = parallel.ShardedLayout(abstract)
  params, _, _ = manager.restore(
      6, abstract.params, abstract.opt_state,
      shardings=layout.restore_shardings(abstract.params, abstract.opt_state))
  kernel = params['layers_2']['blocks_0']['mlp']['fc1']['kernel']
  assert kernel.sharding.spec == layout.specs.params['layers_2']['blocks_0']['mlp']['fc1']['kernel']
  assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // 8

  # ... and the step-6 checkpoint, written sharded over 8 devices, loads in a 1-device process
  whole = np.asarray(kernel)
  code = ('import sys, numpy as np, mixmae_jax\n'
          'model, params = mixmae_jax.load(sys.argv[1], step=6)\n'
          'np.save(sys.argv[2], np.asarray(params["layers_2"]["blocks_0"]["mlp"]["fc1"]'
          '["kernel"]))\n')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  subprocess.run([sys.executable, '-c', code, str(moved), str(tmp_path / 'k.npy')], env=env,
                 check=True, timeout=300, cwd=REPO)
  np.testing.assert_array_equal(np.load(tmp_path / 'k.npy'), whole)
