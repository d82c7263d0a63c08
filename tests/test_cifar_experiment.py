"""The CIFAR-10 comparison of the README (MAE, naive mixing, MixedAE with and without segment
embeddings, random init) in its short version: real photos from ../shared/data/cifar10, the real
pretraining, probe and k-NN entry points, in a one-device process as a user runs it. Skips when
the shared data are absent."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# beside the checkout, or beside the folder that holds it (git worktrees)
CANDIDATES = [REPO.parent / 'shared' / 'data' / 'cifar10',
              REPO.parent.parent / 'shared' / 'data' / 'cifar10']


def test_the_short_comparison_runs_every_variant(tmp_path):
  root = next((p for p in CANDIDATES if (p / 'train').is_dir()), None)
  if root is None:
    pytest.skip(f'no CIFAR-10 tree at {CANDIDATES[0]}')
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'  # the README's setting
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  out = subprocess.run([sys.executable, '-m', 'mixmae_jax.measurement.cifar_experiment', '--fast',
                        f'--workdir={tmp_path}', f'--data_root={root}'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert list(results) == ['mae', 'naive_mixing', 'mixedae', 'mixedae_no_segments', 'random']
  for name, scores in results.items():
    for key in ('knn_top1', 'linear_probe_top1'):
      assert 0.0 <= scores[key] <= 100.0, (name, scores)
  assert 'pretrain_topk_accuracy' in results['mixedae']
  assert 'pretrain_contrastive_loss' in results['mixedae']
  assert 'pretrain_topk_accuracy' not in results['naive_mixing']
  assert 'pretrain_contrastive_loss' not in results['naive_mixing']
  assert '| mixedae |' in out.stdout  # the README's table
  # the subset the short version trains on: 40 photos per class, 8 to evaluate
  assert len(list((tmp_path / 'data' / 'train' / 'cat').iterdir())) == 40
