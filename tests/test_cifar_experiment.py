"""The CIFAR-10 studies in their short version (every row, few steps): real photos from
../shared/data/cifar10, the real pretraining, k-NN, probe and fine-tuning entry points, in a
one-device process as a user runs it (skips when the shared data are absent); and the statistics
that turn seeds into wins, losses and ties."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

from mixmae_jax.measurement import cifar_rows, experiment_report
from mixmae_jax.measurement.experiment_report import Stat

REPO = pathlib.Path(__file__).resolve().parents[1]
# beside the checkout, or beside the folder that holds it (git worktrees)
CANDIDATES = [REPO.parent / 'shared' / 'data' / 'cifar10',
              REPO.parent.parent / 'shared' / 'data' / 'cifar10']


def _root():
  root = next((p for p in CANDIDATES if (p / 'train').is_dir()), None)
  if root is None:
    pytest.skip(f'no CIFAR-10 tree at {CANDIDATES[0]}')
  return root


def _run(*args, timeout=1500):
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'  # the docs' setting
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.run([sys.executable, '-m', 'mixmae_jax.measurement.cifar_experiment',
                         *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _check_study(workdir, study, stdout, tasks):
  results = json.loads((workdir / 'seed_0' / 'results.json').read_text())
  assert list(results) == list(cifar_rows.ROWS[study])
  for name, scores in results.items():
    for task in tasks:
      assert 0.0 <= scores[f'{task}_top1'] <= 100.0, (name, scores)
    pretrained = not cifar_rows.ROWS[study][name].random_of
    assert ('pretrain_cpu_s_per_image' in scores) == pretrained, (name, scores)
    if pretrained:
      assert scores['pretrain_cpu_s_per_image'] > 0 and scores['train_gflops_per_image'] > 0
  assert 'pretrain_topk_accuracy' in results['mixedae']
  assert 'pretrain_contrastive_gap' in results['mixedae']
  assert 'pretrain_feature_rank' in results['mixedae']
  assert 'pretrain_contrastive_loss' not in results['naive_mixing']
  summary = (workdir / 'summary.md').read_text()
  assert '| mixedae |' in summary and summary.strip() in stdout
  assert f'mixedae vs naive_mixing, {tasks[-1]}_top1' in summary
  assert Image.open(workdir / 'accuracy_vs_cost.png').size == (720, 480)
  return results


# the sweep's rows differ in MixedAE's options only: k-NN shows that each pretrains and scores
@pytest.mark.parametrize('study,tasks', [('methods', cifar_rows.TASKS), ('mixedae', ('knn',))])
def test_the_short_study_runs_every_row_and_task(tmp_path, study, tasks):
  root = _root()
  out = _run(f'--study={study}', '--fast', '--seeds=0', f'--workdir={tmp_path}',
             f'--data_root={root}', f'--tasks={",".join(tasks)}')
  assert out.returncode == 0, out.stderr[-3000:]
  results = _check_study(tmp_path, study, out.stdout, tasks)
  # the subset the short version uses: 8 photos per class to train on, 4 to score
  assert len(list((tmp_path / 'data' / 'train' / 'cat').iterdir())) == 8
  assert len(list((tmp_path / 'data' / 'val' / 'cat').iterdir())) == 4
  if study != 'mixedae':
    return
  # a rerun only runs what is missing: here one more task of one row
  name = 'mixedae_head_mlp'
  log = (tmp_path / 'seed_0' / f'pretrain_{name}' / 'metrics.jsonl').read_text()
  again = _run('--study=mixedae', '--fast', '--seeds=0', f'--workdir={tmp_path}',
               f'--data_root={root}', f'--rows={name}', '--tasks=knn,linear_probe')
  assert again.returncode == 0, again.stderr[-3000:]
  rerun = json.loads((tmp_path / 'seed_0' / 'results.json').read_text())
  assert 0.0 <= rerun[name]['linear_probe_top1'] <= 100.0
  assert rerun[name]['knn_top1'] == results[name]['knn_top1']
  assert {k: v for k, v in rerun.items() if k != name} == \
      {k: v for k, v in results.items() if k != name}
  assert (tmp_path / 'seed_0' / f'pretrain_{name}' / 'metrics.jsonl').read_text() == log
  # the full schedule on the short one's scores is refused, not mixed in
  full = _run('--study=mixedae', '--seeds=0', f'--workdir={tmp_path}', f'--data_root={root}',
              timeout=300)
  assert full.returncode == 1 and 'holds scores of' in full.stderr, full.stderr[-2000:]
  assert json.loads((tmp_path / 'seed_0' / 'results.json').read_text()) == rerun


@pytest.mark.parametrize('args,message', [
    (['--data_root=/nowhere'], "--data_root='/nowhere' has no train/ folder"),
    ([], 'give one of --data_root'),
    (['--data_root=/x', '--tfds_name=cifar10'], 'give one of --data_root'),
    (['--data_root=/x', '--rows=mixmae,bert'], "--rows: unknown ['bert']"),
    (['--data_root=/x', '--tasks=knn,segmentation'], "--tasks: unknown ['segmentation']"),
    (['--data_root=/x', '--seeds=0,one'], "--seeds: ['one'] are not whole numbers"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, message):
  out = _run(f'--workdir={tmp_path}', *args, timeout=300)
  assert out.returncode == 1 and message in out.stderr, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr


def test_tfds_data_reaches_every_config():
  data = cifar_rows.Data(tfds_name='cifar10', tfds_eval_split='test', train_examples=5000)
  schedule = cifar_rows.SCHEDULES['methods']
  pre = cifar_rows.pretrain_config('methods', 'simmim', data, schedule, seed=1)
  assert (pre.data.tfds_name, pre.data.tfds_split, pre.data.image_folder, pre.seed) == (
      'cifar10', 'train[:5000]', '', 1)
  for task in cifar_rows.TASKS:
    c = cifar_rows.evaluation_config(task, 'methods', 'random_pvt', data, '', schedule, 1)
    assert (c.data.tfds_name, c.data.tfds_train_split, c.data.tfds_eval_split) == (
        'cifar10', 'train[:5000]', 'test')
    assert c.model.encoder.name == 'pvt' and c.model.encoder.img_size == 128


def test_each_row_is_scored_on_its_own_encoder_family_at_its_geometry():
  expected = {'mixmae': ('swin', 128), 'mae': ('vit', 128), 'mixedae': ('vit', 128),
              'ummae_swin': ('ummae_swin', 128), 'ummae_pvt': ('pvt', 128),
              'simmim': ('swin', 128), 'random_vit': ('vit', 128)}
  for name, (family, size) in expected.items():
    got, fields = cifar_rows.encoder_of('methods', name)
    assert (got, fields.img_size) == (family, size), name
  assert cifar_rows.encoder_of('mixedae', 'random_vit')[1].patch_size == 4  # 32 px, 8x8 grid


# ---------------- the statistics ----------------

def test_seeds_become_means_spreads_and_ties():
  per_seed = {'0': {'a': {'x_top1': 50.0}, 'b': {'x_top1': 40.0}, 'c': {'x_top1': 49.0}},
              '1': {'a': {'x_top1': 52.0}, 'b': {'x_top1': 41.0}, 'c': {'x_top1': 45.0}},
              '2': {'a': {'x_top1': 51.0}, 'b': {'x_top1': 42.0}, 'c': {'x_top1': 53.0}}}
  summary = experiment_report.summarise(per_seed)
  a = summary['a']['x_top1']
  assert (a.mean, a.std, a.n) == (51.0, 1.0, 3)
  assert a.sem == pytest.approx(1 / math.sqrt(3))
  assert experiment_report.compare(a, summary['b']['x_top1'])[2] == 'win'
  assert experiment_report.compare(summary['b']['x_top1'], a)[2] == 'loss'
  assert experiment_report.compare(a, summary['c']['x_top1'])[2] == 'tie'  # 51 vs 49 +- 2.3
  assert experiment_report.tied_best(summary, 'x_top1') == {'a', 'c'}
  table = experiment_report.markdown(summary, [('x', 'x_top1', 1)], ['a', 'b', 'c'])
  assert '| a | 3 | **51.0 ± 1.0** |' in table and '| b | 3 | 41.0 ± 1.0 |' in table


def test_one_seed_never_wins():
  one = Stat(60.0, 0.0, 1)
  assert experiment_report.compare(one, Stat(10.0, 0.0, 1))[2] == 'tie'
  assert math.isinf(one.sem)
