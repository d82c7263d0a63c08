"""Saves written from a background thread: the same checkpoints as a save on the loop thread,
their failures still reported, and the state's buffers free for the next step at once."""
import os

import jax
import numpy as np
import pytest
from conftest import tiny_pretraining_config

from mixmae_jax.measurement import save_stall_benchmark
from mixmae_jax.training import checkpointing, parallel
from mixmae_jax.training import pretraining as train_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(**overrides):
  return tiny_pretraining_config(**{'reconstruction_images': 0, 'log_every_steps': 2,
                                    'num_train_steps': 4, 'checkpoint_every_steps': 2,
                                    **overrides})


def _arrays(workdir, step):
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)), create=False)
  try:
    meta = ckpt.read_meta(step)
    abstract = jax.eval_shape(train_loop.step_setup(
        _tiny_config(), *_model_and_schedule()).init)
    params, opt_state, _ = ckpt.restore(step, abstract.params, abstract.opt_state)
    return params, opt_state, meta
  finally:
    ckpt.close()


def _model_and_schedule():
  from mixmae_jax import architectures  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import config_checks  # pylint: disable=import-outside-toplevel
  config = _tiny_config()
  objective, arch = config_checks.pretraining_arch(config)
  return objective, arch, architectures.build_model(arch), lambda step: 1e-4


@pytest.mark.parametrize('sharding', ['replicated', 'sharded'])
def test_background_and_foreground_saves_write_the_same_checkpoints(tmp_path, sharding):
  for background in (True, False):
    train_loop.train_and_evaluate(
        _tiny_config(save_in_background=background, state_sharding=sharding),
        str(tmp_path / str(background)))
  for step in (2, 4):
    got = _arrays(tmp_path / 'True', step)
    want = _arrays(tmp_path / 'False', step)
    jax.tree.map(np.testing.assert_array_equal, got[:2], want[:2])
    assert got[2]['checksums'] == want[2]['checksums']
    assert got[2]['data_positions'] == want[2]['data_positions']


def test_a_failed_background_save_is_raised_by_wait(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'))
  ckpt.save_in_background(1, {'w': 'not an array'}, None, {})
  with pytest.raises(Exception):  # noqa: B017  (raised in the writer thread, reported here)
    ckpt.wait()
  ckpt.save_in_background(2, {'w': np.ones(3, np.float32)}, None, {})  # the writer goes on
  ckpt.wait()
  assert ckpt.steps() == [2]
  ckpt.close()


def test_the_copy_taken_for_saving_survives_the_next_step_donating_the_state():
  layout = parallel.ReplicatedLayout()
  state = layout.place_state({'w': np.arange(4, dtype=np.float32)})
  copy = layout.device_copy(state)
  step = jax.pmap(lambda s: jax.tree.map(lambda x: x + 1, s), axis_name='batch',
                  donate_argnums=0)
  state = step(state)
  np.testing.assert_array_equal(copy['w'], np.arange(4))
  np.testing.assert_array_equal(layout.single_copy(state)['w'], np.arange(4) + 1)
  assert isinstance(copy['w'], jax.Array) and copy['w'].shape == (4,)


def test_the_save_stall_benchmark_times_both_ways(tmp_path, capsys):
  figures = save_stall_benchmark.main([
      '--config=' + os.path.join(REPO, 'configs', 'demo.py'), '--config.batch_size=16',
      '--config.model.encoder.depths=(1, 1, 1, 1)', '--steps=4', '--save_every=2',
      '--rounds=1', f'--workdir={tmp_path}'])
  assert set(figures) >= {'foreground', 'background', 'state_bytes'}
  for mode in ('foreground', 'background'):
    assert figures[mode]['step_seconds'] > 0 and figures[mode]['step_after_save_seconds'] > 0
  assert sorted(os.listdir(tmp_path / 'background')) == sorted(os.listdir(tmp_path / 'foreground'))
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{')
