"""Checkpoints written by the flat layout (commit cc95de8, `tests/fixtures/legacy_cc95de8`) load,
resume and fine-tune with the current code: the records' old kinds and unnamed encoders are read
as MixMAE and Swin, and the params and optimizer state restore into today's trees."""
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixmae_jax
from mixmae_jax import finetune
from mixmae_jax.evaluation.finetune_config import finetune_config
from mixmae_jax.evaluation.finetune_config import shrink_task_for_local_run as shrink_ft
from mixmae_jax.networks.classifier import Classifier
from mixmae_jax.objectives.mixmae import MixMAE, MixMAEConfig
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run

LEGACY = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'legacy_cc95de8'


@pytest.fixture
def legacy(tmp_path):
  """A writable copy of the legacy workdirs (the fixtures themselves are never touched)."""
  shutil.copytree(LEGACY, tmp_path / 'legacy')
  return tmp_path / 'legacy'


def _pretraining_config():
  """The legacy run's config in today's layout (make_legacy.py in the fixture folder)."""
  c = shrink_for_local_run(pretraining_config('mixmae', size='tiny'))
  c.model.encoder.embed_dim, c.model.objective.decoder_dim = 8, 16
  c.batch_size, c.warmup_steps, c.log_every_steps, c.keep_checkpoints = 16, 1, 2, 1
  return c


def test_legacy_records_load_as_today_s_models(legacy):
  step, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(legacy / 'pretrain')))
  assert step == 4 and meta['arch']['kind'] == 'mixmae' and 'name' not in meta['arch']['encoder']
  model, params = mixmae_jax.load(str(legacy / 'pretrain'))
  assert isinstance(model, MixMAE) and model.config.encoder.name == 'swin'
  assert model.config.encoder.embed_dim == 8 and model.config.decoder.dim == 16
  out = model.apply({'params': params}, jnp.zeros((2, 64, 64, 3)), mask=jnp.eye(2, dtype=int))
  assert np.isfinite(float(out['loss']))
  for workdir in ('classifier', 'classifier/best'):
    classifier, cparams = mixmae_jax.load(str(legacy / workdir))
    assert isinstance(classifier, Classifier) and classifier.config.num_classes == 10
    assert classifier.apply({'params': cparams}, jnp.zeros((1, 64, 64, 3))).shape == (1, 10)


def test_a_legacy_pretraining_run_resumes(legacy):
  _, before = mixmae_jax.load(str(legacy / 'pretrain'))
  config = _pretraining_config()
  config.num_train_steps, config.checkpoint_every_steps = 6, 6
  pretraining.train_and_evaluate(config, str(legacy / 'pretrain'))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(legacy / 'pretrain')))
  assert ckpt.steps() == [6]
  lines = (legacy / 'pretrain' / 'metrics.jsonl').read_text().splitlines()
  assert [int(line.split('"step": ')[1].split(',')[0]) for line in lines] == [2, 4, 6]
  _, after = mixmae_jax.load(str(legacy / 'pretrain'))
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       before, after)
  assert 0 < max(jax.tree.leaves(moved)) < 1.0  # two more small steps from the legacy params


def test_a_legacy_pretraining_checkpoint_fine_tunes_and_a_legacy_fine_tuning_resumes(legacy):
  data = legacy.parent / 'digits'
  from mixmae_jax.measurement.digits_experiment import write_digits_folders  # pylint: disable=import-outside-toplevel
  pytest.importorskip('sklearn')
  write_digits_folders(str(data), size=64)
  config = shrink_ft(finetune_config('tiny'))
  config.model.encoder.embed_dim = 8
  config.data.train_folder, config.data.eval_folder = str(data / 'train'), str(data / 'val')
  config.batch_size, config.eval_batch_size, config.warmup_steps = 16, 120, 1
  config.pretrained = str(legacy / 'pretrain')
  config.num_train_steps = config.checkpoint_every_steps = config.eval_every_steps = 2
  scores = finetune.run(config, str(legacy.parent / 'new_finetune'))
  assert 0.0 <= scores['eval_top1'] <= 100.0
  config.num_train_steps = config.checkpoint_every_steps = config.eval_every_steps = 4
  scores = finetune.run(config, str(legacy / 'classifier'))  # resumes the legacy run at step 2
  steps = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(legacy / 'classifier')))
  assert steps.steps() == [2, 4] and 'eval_top1' in scores


def test_architecture_records_carry_their_format_and_older_ones_are_upgraded_in_one_place():
  from mixmae_jax import architectures  # pylint: disable=import-outside-toplevel
  from mixmae_jax.networks import swin  # pylint: disable=import-outside-toplevel
  arch = MixMAEConfig(encoder=swin.config('tiny', img_size=64, window_sizes=(4, 4, 4, 2)))
  record = architectures.to_dict(arch)
  assert record['format'] == architectures.RECORD_FORMAT == 2
  first = {k: v for k, v in record.items() if k not in ('format', 'objective')}
  first['kind'] = 'mixmae'  # how the first records named a pretraining model
  first['encoder'] = {k: v for k, v in record['encoder'].items() if k != 'name'}
  assert architectures.upgrade(first) == {k: v for k, v in record.items() if k != 'format'}
  assert architectures.from_dict(first) == arch
  unversioned = {k: v for k, v in record.items() if k != 'format'}  # today's shape, no field
  assert architectures.from_dict(unversioned) == arch
  with pytest.raises(ValueError, match='format 3, newer than this package reads'):
    architectures.from_dict({**record, 'format': 3})
