"""Every shipped config builds and validates; impossible configs fail early, naming the field."""
import importlib.util
import pathlib

import pytest

from mixmae_jax.architecture import mixmae_arch
from mixmae_jax.config_checks import ConfigError, validate
from mixmae_jax.config_defaults import pretraining_config

# Pretraining configs; the fine-tuning and probing ones are checked in test_finetune_configs.py.
CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if not p.stem.startswith(('finetune_', 'linprobe_')))


def _load(path, arg=None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
  config = _load(path)
  validate(config, global_devices=8 if config.batch_size % 16 == 0 else 1)
  assert mixmae_arch(config.model).problems() == []
  if path.stem != 'demo':
    small = _load(path, 'runlocal')
    validate(small, global_devices=1)
    assert small.model.img_size < config.model.img_size


def test_published_recipes_match_the_paper():
  base = _load(next(p for p in CONFIGS if p.stem == 'mixmae_swin_base_w14_600ep'))
  assert (base.batch_size, base.num_epochs, base.warmup_epochs) == (2048, 600, 40)
  assert (base.base_lr, base.weight_decay, base.adam_b1, base.adam_b2) == (1.5e-4, 0.05, 0.9,
                                                                          0.95)
  assert base.model.embed_dim == 128 and tuple(base.model.window_sizes) == (14, 14, 14, 7)
  assert base.model.mask_ratio == 0.5 and base.grad_clip_norm == 0.0
  large = _load(next(p for p in CONFIGS if p.stem == 'mixmae_swin_large_w14_600ep'))
  assert large.model.embed_dim == 192 and tuple(large.model.num_heads) == (6, 12, 24, 48)


@pytest.mark.parametrize('field,value,message', [
    ('model.window_sizes', (12, 14, 14, 7), 'model.window_sizes[0]=12'),
    ('model.img_size', 200, 'model.img_size=200'),
    ('model.mask_ratio', 1.0, 'model.mask_ratio=1.0'),
    ('model.mask_ratio', 0.0, 'model.mask_ratio=0.0'),
    ('model.decoder_num_heads', 5, 'decoder_num_heads=5'),
    ('batch_size', 2044, 'batch_size=2044'),
    ('batch_size', 24, 'must be even'),
    ('grad_accum_steps', 0, 'grad_accum_steps=0'),
    ('base_lr', -1.0, 'base_lr=-1.0'),
    ('compute_dtype', 'float16', "compute_dtype='float16'"),
    ('data.crop_scale', (0.5, 0.2), 'data.crop_scale=(0.5, 0.2)'),
])
def test_impossible_configs_fail_before_compiling_naming_the_field(field, value, message):
  config = pretraining_config('base')
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as e:
    validate(config, global_devices=8, process_count=1)
  assert message in str(e.value)


def test_all_problems_are_reported_at_once():
  config = pretraining_config('base')
  config.model.img_size = 200
  config.batch_size = 7
  with pytest.raises(ConfigError) as e:
    validate(config, global_devices=8)
  assert 'img_size=200' in str(e.value) and 'batch_size=7' in str(e.value)
