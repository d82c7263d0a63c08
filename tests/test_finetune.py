"""Fine-tuning, linear probing and k-NN end to end, from a tiny pretraining checkpoint.

Covers: the CLI with exact resume, best/last checkpoints that `mixmae_jax.load` opens, a probe
whose saved classifier reproduces its logits, EMA evaluation, k-NN, loading an encoder at another
resolution, and config validation.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import mixmae_jax
from mixmae_jax import finetune
from mixmae_jax.evaluation import pretrained
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining as train_loop
from mixmae_jax.training.config_checks import ConfigError
from mixmae_jax.training.config_defaults import pretraining_config
from mixmae_jax.training.config_defaults import shrink_for_local_run as shrink_pretraining
from mixmae_jax.evaluation.finetune_checks import validate
from mixmae_jax.evaluation.finetune_config import (finetune_config, linear_probe_config,
                                                   shrink_task_for_local_run)

REPO = pathlib.Path(__file__).resolve().parents[1]
COLORS = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (220, 220, 40)]


def _write_classes(root, per_class):
  rng = np.random.default_rng(len(str(root)))
  for c, color in enumerate(COLORS):
    os.makedirs(root / f'class{c}', exist_ok=True)
    for i in range(per_class):
      noise = rng.integers(-25, 25, (48, 52, 3))
      pixels = np.clip(np.asarray(color) + noise, 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(root / f'class{c}' / f'{i}.png')
  return str(root)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """A 4-class colour folder pair and a 2-step pretraining checkpoint of the runlocal encoder."""
  root = tmp_path_factory.mktemp('finetune')
  train, val = _write_classes(root / 'train', 6), _write_classes(root / 'val', 3)
  pre = shrink_pretraining(pretraining_config('mixmae', size='base'))
  pre.batch_size, pre.num_train_steps, pre.warmup_steps = 16, 2, 1
  pre.data.image_folder = train
  train_loop.train_and_evaluate(pre, str(root / 'pretrain'))
  return {'train': train, 'val': val, 'pretrained': str(root / 'pretrain')}


def _config(setup, task='finetune', **overrides):
  c = shrink_task_for_local_run(linear_probe_config('base') if task == 'linear_probe' else
                                finetune_config('base'))
  c.task = task
  c.pretrained = setup['pretrained']
  c.data.train_folder, c.data.eval_folder = setup['train'], setup['val']
  c.batch_size, c.eval_batch_size = 16, 8  # 8 fake devices: 2 images each (Mixup pairs them)
  c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 4, 1, 2, 2
  c.probe.norm_examples = 16
  c.update_from_flattened_dict(overrides)
  return c


def _metrics(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cli(workdir, flags):
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0'
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  out = subprocess.run([sys.executable, '-m', 'mixmae_jax.finetune',
                        '--config=configs/finetune_swin_base_w14.py:runlocal',
                        f'--workdir={workdir}', *flags], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_cli_fine_tunes_saves_best_and_last_and_resumes_exactly(setup, tmp_path):
  flags = [f'--config.pretrained={setup["pretrained"]}',
           f'--config.data.train_folder={setup["train"]}',
           f'--config.data.eval_folder={setup["val"]}', '--config.num_train_steps=4',
           '--config.log_every_steps=1', '--config.eval_every_steps=2',
           '--config.checkpoint_every_steps=2']
  out = _cli(tmp_path, flags)
  assert 'eval step 4: top-1' in out.stdout
  first = _metrics(tmp_path)
  train = [r for r in first if 'loss' in r]
  evals = [r for r in first if 'eval_top1' in r]
  assert [r['step'] for r in train] == [1, 2, 3, 4] and [r['step'] for r in evals] == [2, 4]
  assert all(np.isfinite(r['loss']) for r in train)
  assert {'eval_top5', 'eval_loss', 'best_top1'} <= set(evals[0])
  assert (tmp_path / 'tensorboard').is_dir()
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)))
  assert ckpt.steps() == [2, 4]
  _, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(tmp_path)))
  assert meta['task'] == 'finetune' and meta['class_names'] == [f'class{c}' for c in range(4)]
  assert meta['best_top1'] == max(r['eval_top1'] for r in evals)
  model, params = mixmae_jax.load(str(tmp_path / 'best'))
  assert set(params) >= {'patch_embed', 'layers_0', 'norm', 'head'}
  assert model.apply({'params': params}, jnp.zeros((2, 64, 64, 3))).shape == (2, 4)
  # lose step 4 and run again: it resumes at 2 and logs the same numbers
  shutil.rmtree(tmp_path / 'checkpoints' / '4')
  _cli(tmp_path, flags)
  again = _metrics(tmp_path)
  assert [r['step'] for r in again] == [r['step'] for r in first]
  for a, b in zip(first, again):
    for key in ('loss', 'grad_norm', 'eval_top1', 'eval_loss'):
      assert a.get(key) == b.get(key), (a, b)


def test_linear_probe_trains_only_the_head_and_saves_a_classifier(setup, tmp_path):
  config = _config(setup, 'linear_probe', **{'probe.optimizer': 'sgd', 'base_lr': 0.5})
  scores = finetune.run(config, str(tmp_path))
  assert 0.0 <= scores['eval_top1'] <= 100.0 and scores['eval_count'] == 12
  model, params = mixmae_jax.load(str(tmp_path))
  _, encoder = mixmae_jax.load(setup['pretrained'])
  for name in ('patch_embed', 'layers_0', 'layers_3', 'norm'):  # the encoder stayed frozen
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(encoder[name])):
      np.testing.assert_array_equal(a, b)
  # the saved classifier's head has the standardization folded in: its accuracy is the probe's
  from mixmae_jax.data import labelled as labelled_input  # pylint: disable=import-outside-toplevel
  from mixmae_jax.data.pixels import normalize  # pylint: disable=import-outside-toplevel
  source = labelled_input.open_labelled(config.data, train=False)
  correct = count = 0
  crop_pct = config.data.eval_crop_pct
  for batch in labelled_input.eval_batches(source, image_size=64, crop_pct=crop_pct,
                                           per_host_batch=12):
    logits = model.apply({'params': params}, normalize(batch['image'], config.data.mean,
                                                       config.data.std))
    correct += int(np.sum((np.argmax(logits, -1) == batch['label']) * batch['mask']))
    count += int(batch['mask'].sum())
  assert 100.0 * correct / count == pytest.approx(scores['eval_top1'])


def test_ema_is_evaluated_beside_the_weights(setup, tmp_path):
  scores = finetune.run(_config(setup, ema_decay=0.5, num_train_steps=3), str(tmp_path))
  assert {'eval_top1', 'eval_ema_top1', 'eval_ema_loss'} <= set(scores)


def test_knn_scores_the_encoder_without_training(setup, tmp_path):
  scores = finetune.run(_config(setup, 'knn'), str(tmp_path))
  assert 0.0 <= scores['knn_top1'] <= scores['knn_top5'] <= 100.0 + 1e-4
  assert scores['knn_count'] == 12 and _metrics(tmp_path)[0]['knn_top1'] == scores['knn_top1']
  assert not (tmp_path / 'checkpoints').exists()


def test_an_encoder_moves_to_another_input_and_window_size(setup):
  c = _config(setup)
  c.model.encoder.img_size, c.model.encoder.window_sizes = 96, (6, 6, 6, 3)
  from mixmae_jax.evaluation.finetune_checks import classifier_arch  # pylint: disable=import-outside-toplevel
  params, encoder = pretrained.load_encoder(setup['pretrained'],
                                            classifier_arch(c.model, 4).encoder)
  assert encoder.img_size == 96 and encoder.pos_embed_grid == 16  # the 64-pixel run's grid
  table = params['layers_0']['blocks_0']['attn']['relative_position_bias_table']
  assert table.shape == (11 * 11, 1)
  c.model.encoder.embed_dim = 32
  with pytest.raises(ValueError, match='embed_dim=16 but model.encoder.embed_dim=32'):
    pretrained.load_encoder(setup['pretrained'], classifier_arch(c.model, 4).encoder)


@pytest.mark.parametrize('field,value,message', [
    ('task', 'segment', "task='segment'"),
    ('layer_decay', 0.0, 'layer_decay=0.0'),
    ('augment.rand_augment', 'rand-q3', "cannot read 'q3'"),
    ('augment.mixup_prob', 1.5, 'augment.mixup_prob=1.5'),
    ('augment.label_smoothing', 1.0, 'augment.label_smoothing=1.0'),
    ('batch_size', 24, 'Mixup/CutMix (off with augment.mixup_prob=0) mixes image i with image '
                       'B-1-i'),
    ('eval_batch_size', 12, 'eval_batch_size=12'),
    ('data.eval_crop_pct', 0.0, 'data.eval_crop_pct=0.0'),
    ('data.eval_folder', '', 'set both'),
    ('model.encoder.window_sizes', (5, 5, 5, 5), 'model.encoder.window_sizes[0]=5'),
    ('model.encoder.name', 'convnext', "unknown encoder 'convnext'"),
    ('probe.optimizer', 'adam', "probe.optimizer='adam'"),
    ('eval_every_steps', 0, 'eval_every_steps=0'),
])
def test_impossible_configs_fail_naming_the_field(field, value, message):
  config = finetune_config('base')
  config.data.train_folder, config.data.eval_folder = '/data/train', '/data/val'
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as e:
    validate(config, global_devices=8)
  assert message in str(e.value)


class _Killed(BaseException):
  """Stands in for SIGKILL in-process: nothing after it runs."""


def test_a_rerun_after_a_best_save_finishes_with_its_final_evaluation(setup, tmp_path,
                                                                       monkeypatch):
  """Killed after best/checkpoints/2 was saved and before any regular checkpoint: the rerun
  must not save best step 2 again (it used to fail at the end with StepAlreadyExistsError), and
  a third run of the finished workdir reports the final evaluation it did not run again."""
  from mixmae_jax.evaluation import finetune_loop  # pylint: disable=import-outside-toplevel
  config = _config(setup, num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=4,
                   **{'augment.mixup_prob': 0.0, 'augment.rand_augment': ''})
  original = finetune_loop.EvaluationHook.__call__

  def killed_after_the_first_best(self, loop, state, step):
    scores = original(self, loop, state, step)
    if step == 2:
      self.best.wait()
      raise _Killed()
    return scores

  monkeypatch.setattr(finetune_loop.EvaluationHook, '__call__', killed_after_the_first_best)
  with pytest.raises(_Killed):
    finetune.run(config, str(tmp_path))
  best_dir = checkpointing.checkpoint_dir(str(tmp_path / 'best'))
  assert checkpointing.Checkpointer(best_dir, create=False).steps() == [2]
  assert not (tmp_path / 'checkpoints' / '2').exists()
  monkeypatch.setattr(finetune_loop.EvaluationHook, '__call__', original)
  second = finetune.run(config, str(tmp_path))
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status['state'], status['step']) == ('finished', 4)
  third = finetune.run(config, str(tmp_path))
  assert third['eval_top1'] == second['eval_top1']
  evaluated = [r['step'] for r in _metrics(tmp_path) if 'eval_top1' in r]
  assert evaluated.count(4) == 1  # the third run evaluated nothing again
  mixmae_jax.load(str(tmp_path / 'best'))


def test_a_resume_whose_class_folders_changed_is_refused_naming_both(setup, tmp_path):
  train = tmp_path / 'train'
  shutil.copytree(setup['train'], train)
  val = tmp_path / 'val'
  shutil.copytree(setup['val'], val)
  config = _config(setup, num_train_steps=2, checkpoint_every_steps=2, warmup_steps=1)
  config.data.train_folder, config.data.eval_folder = str(train), str(val)
  finetune.run(config, str(tmp_path / 'run'))
  records = {n: (tmp_path / 'run' / n).read_bytes() for n in ('status.json', 'config.json')}
  for root in (train, val):
    os.rename(root / 'class1', root / 'class9')
  config.num_train_steps = 4
  from mixmae_jax.data import DataError  # pylint: disable=import-outside-toplevel
  with pytest.raises(DataError, match=r"4 classes \['class0', 'class1', 'class2', 'class3'\] but "
                                      r"the data now has 4 \['class0', 'class2', 'class3', "
                                      r"'class9'\]"):
    finetune.run(config, str(tmp_path / 'run'))
  assert {n: (tmp_path / 'run' / n).read_bytes() for n in records} == records


def test_too_few_outputs_and_a_single_class_are_refused(setup, tmp_path):
  from mixmae_jax.data import DataError  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match=r'model.num_classes=2 is smaller than the 4 classes'):
    finetune.run(_config(setup, **{'model.num_classes': 2}), str(tmp_path / 'two'))
  one = tmp_path / 'one'
  shutil.copytree(pathlib.Path(setup['train']) / 'class0', one / 'train' / 'class0')
  shutil.copytree(pathlib.Path(setup['val']) / 'class0', one / 'val' / 'class0')
  config = _config(setup)
  config.data.train_folder, config.data.eval_folder = str(one / 'train'), str(one / 'val')
  with pytest.raises(DataError, match='a classifier needs at least 2'):
    finetune.run(config, str(tmp_path / 'single'))


def test_bad_folders_and_checkpoints_are_user_errors_not_tracebacks(setup, tmp_path):
  """Each case the CLI must print as one `error:` line raises one of the errors it prints so."""
  from mixmae_jax.training.entry_point import USER_ERRORS  # pylint: disable=import-outside-toplevel
  extra = tmp_path / 'extra'
  shutil.copytree(setup['val'], extra)
  shutil.copytree(pathlib.Path(setup['val']) / 'class0', extra / 'class7')
  loose = tmp_path / 'loose'
  shutil.copytree(setup['train'], loose)
  shutil.copy(pathlib.Path(setup['train']) / 'class0' / '0.png', loose / 'stray.png')
  empty = tmp_path / 'empty'
  (empty / 'class0').mkdir(parents=True)
  (empty / 'class1').mkdir()
  corrupt = tmp_path / 'corrupt'
  for c in ('class0', 'class1'):
    (corrupt / c).mkdir(parents=True)
    (corrupt / c / 'x.jpg').write_bytes(b'not an image')
  wide = _config(setup)
  wide.model.encoder.embed_dim = 24
  cases = {'an eval folder with an extra class': dict(eval_folder=str(extra)),
           'a loose image beside the class folders': dict(train_folder=str(loose)),
           'an empty image folder': dict(train_folder=str(empty), eval_folder=str(empty)),
           'a corrupt-only image folder': dict(train_folder=str(corrupt),
                                               eval_folder=str(corrupt))}
  for name, data in cases.items():
    config = _config(setup)
    config.data.update(data)
    with pytest.raises(USER_ERRORS):
      finetune.run(config, str(tmp_path / name.replace(' ', '_')))
  with pytest.raises(USER_ERRORS, match='embed_dim'):  # a pretrained encoder of another size
    finetune.run(wide, str(tmp_path / 'wide'))
