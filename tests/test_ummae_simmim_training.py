"""UM-MAE and SimMIM pretrain through the real loop: the README's demo commands (shortened) give
falling losses and pictures, a resumed UM-MAE run draws the same masks as an uninterrupted one,
and a UM-MAE PVT checkpoint is probed and scored by k-NN."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mixmae_jax import finetune
from mixmae_jax.evaluation.finetune_config import linear_probe_config
from mixmae_jax.evaluation.finetune_config import shrink_task_for_local_run as shrink_finetune
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining as train_loop
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def _metrics(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return env


@pytest.mark.parametrize('config,objective,steps,columns', [
    ('configs/ummae_demo.py', 'ummae', 40, 3), ('configs/simmim_demo.py', 'simmim', 60, 4)])
def test_the_demo_pretrains_with_a_falling_loss_and_pictures(tmp_path, config, objective, steps,
                                                             columns):
  """The README's demo command, shortened (SimMIM's L1 on raw pixels needs a few more steps)."""
  out = subprocess.run(
      [sys.executable, '-m', 'mixmae_jax.train', f'--config={config}', f'--workdir={tmp_path}',
       f'--config.num_train_steps={steps}', '--config.warmup_steps=5',
       f'--config.log_every_steps={steps // 4}', f'--config.checkpoint_every_steps={steps}',
       f'--config.reconstruction_every_steps={steps}', '--config.batch_size=16'],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  losses = [r['loss'] for r in _metrics(tmp_path)]
  assert len(losses) == 4 and losses[-1] < 0.92 * losses[0], losses
  picture = Image.open(tmp_path / 'reconstructions' / f'step_{steps:07d}.png')
  assert picture.size[0] > columns * 128
  _, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(tmp_path)))
  assert meta['arch']['objective'] == objective


def _ummae_config(encoder='ummae_swin', **overrides):
  c = shrink_for_local_run(pretraining_config('ummae', encoder, 'tiny' if encoder ==
                                              'ummae_swin' else 'small'))
  c.batch_size = 16  # 8 fake devices x 2 images
  c.update_from_flattened_dict(overrides)
  return c


def test_a_resumed_ummae_run_repeats_the_uninterrupted_one(tmp_path):
  """Masks are drawn on the devices from (seed, step, device): after losing step 4 the run
  resumes at 2 and logs the same losses."""
  config = _ummae_config(num_train_steps=4, log_every_steps=1, checkpoint_every_steps=2,
                         reconstruction_every_steps=0, reconstruction_images=0)
  train_loop.train_and_evaluate(config, str(tmp_path))
  first = _metrics(tmp_path)
  shutil.rmtree(tmp_path / 'checkpoints' / '4')
  train_loop.train_and_evaluate(config, str(tmp_path))
  again = _metrics(tmp_path)
  assert [r['step'] for r in first] == [1, 2, 3, 4] == [r['step'] for r in again]
  for a, b in zip(first, again):
    assert a['loss'] == b['loss'] and a['grad_norm'] == b['grad_norm']


def _write_classes(root, per_class):
  rng = np.random.default_rng(len(str(root)))
  for c, color in enumerate([(230, 30, 30), (30, 230, 30), (30, 30, 230)]):
    os.makedirs(root / f'class{c}', exist_ok=True)
    for i in range(per_class):
      pixels = np.clip(np.asarray(color) + rng.integers(-25, 25, (40, 44, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(root / f'class{c}' / f'{i}.png')
  return str(root)


@pytest.mark.parametrize('task', ['linear_probe', 'knn'])
def test_a_ummae_pvt_is_probed_and_scored_by_knn(tmp_path, task):
  pre = _ummae_config('pvt', num_train_steps=2, warmup_steps=1, reconstruction_images=0)
  train_loop.train_and_evaluate(pre, str(tmp_path / 'pre'))
  c = shrink_finetune(linear_probe_config('small', 'pvt'))
  c.task, c.pretrained = task, str(tmp_path / 'pre')
  c.data.train_folder = _write_classes(tmp_path / 'train', 6)
  c.data.eval_folder = _write_classes(tmp_path / 'val', 2)
  c.batch_size, c.eval_batch_size, c.num_train_steps, c.warmup_steps = 16, 8, 2, 1
  c.probe.norm_examples = 16
  scores = finetune.run(c, str(tmp_path / task))
  key = 'eval_top1' if task == 'linear_probe' else 'knn_top1'
  assert 0.0 <= scores[key] <= 100.0
  assert scores['eval_count' if task == 'linear_probe' else 'knn_count'] == 6
