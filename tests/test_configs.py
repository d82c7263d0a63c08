"""Every shipped config builds and validates; impossible configs fail early, naming the field."""
import importlib.util
import pathlib

import pytest

from mixmae_jax.training.config_checks import ConfigError, pretraining_arch, validate
from mixmae_jax.training.config_defaults import pretraining_config

# Pretraining configs; the fine-tuning and probing ones are checked in test_finetune_configs.py.
CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if not p.stem.startswith(('finetune_', 'linprobe_', '_')))


def _load(path, arg=None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
  config = _load(path)
  validate(config, global_devices=8 if config.batch_size % 16 == 0 else 1)
  assert pretraining_arch(config)[1].problems() == []
  if not path.stem.endswith('demo'):
    small = _load(path, 'runlocal')
    validate(small, global_devices=1)
    assert small.model.encoder.img_size < config.model.encoder.img_size
    assert small.model.objective.name == config.model.objective.name
    assert small.model.encoder.name == config.model.encoder.name


def test_published_recipes_match_the_paper():
  base = _load(next(p for p in CONFIGS if p.stem == 'mixmae_swin_base_w14_600ep'))
  assert (base.batch_size, base.num_epochs, base.warmup_epochs) == (2048, 600, 40)
  assert (base.base_lr, base.weight_decay, base.adam_b1, base.adam_b2) == (1.5e-4, 0.05, 0.9,
                                                                          0.95)
  assert (base.model.encoder.name, base.model.objective.name) == ('swin', 'mixmae')
  assert base.model.encoder.embed_dim == 128
  assert tuple(base.model.encoder.window_sizes) == (14, 14, 14, 7)
  assert base.model.objective.mask_ratio == 0.5 and base.grad_clip_norm == 0.0
  large = _load(next(p for p in CONFIGS if p.stem == 'mixmae_swin_large_w14_600ep'))
  assert large.model.encoder.embed_dim == 192
  assert tuple(large.model.encoder.num_heads) == (6, 12, 24, 48)


def test_mae_recipes_match_the_paper():
  """MAE (SPEC section 5): ViT-B/16, batch 4096, lr 1.5e-4 x batch / 256, 40 warmup epochs,
  AdamW (0.9, 0.95), wd 0.05, ratio 0.75, norm-pix, decoder 512 x 8 with 16 heads."""
  by_stem = {p.stem: _load(p) for p in CONFIGS if p.stem.startswith('mae_vit')}
  assert {s: c.num_epochs for s, c in by_stem.items()} == {
      'mae_vit_base_800ep': 800, 'mae_vit_base_1600ep': 1600, 'mae_vit_large_1600ep': 1600}
  base = by_stem['mae_vit_base_800ep']
  assert (base.batch_size, base.warmup_epochs, base.base_lr, base.weight_decay) == (
      4096, 40, 1.5e-4, 0.05)
  assert (base.adam_b1, base.adam_b2, tuple(base.data.crop_scale)) == (0.9, 0.95, (0.2, 1.0))
  e, o = base.model.encoder, base.model.objective
  assert (e.name, e.patch_size, e.embed_dim, e.depth, e.num_heads) == ('vit', 16, 768, 12, 12)
  assert (o.name, o.mask_ratio, o.norm_pix_loss) == ('mae', 0.75, True)
  assert (o.decoder_dim, o.decoder_depth, o.decoder_num_heads) == (512, 8, 16)
  large = by_stem['mae_vit_large_1600ep'].model.encoder
  assert (large.embed_dim, large.depth, large.num_heads) == (1024, 24, 16)


@pytest.mark.parametrize('field,value,message', [
    ('model.encoder.window_sizes', (12, 14, 14, 7), 'model.encoder.window_sizes[0]=12'),
    ('model.encoder.img_size', 200, 'model.encoder.img_size=200'),
    ('model.objective.mask_ratio', 1.0, 'model.objective.mask_ratio=1.0'),
    ('model.objective.mask_ratio', 0.0, 'model.objective.mask_ratio=0.0'),
    ('model.objective.decoder_num_heads', 5, 'model.objective.decoder_num_heads=5'),
    ('model.objective.name', 'mim', "unknown objective 'mim'"),
    ('model.encoder.name', 'convnext', "unknown encoder 'convnext'"),
    ('batch_size', 2044, 'batch_size=2044'),
    ('batch_size', 24, 'must be a multiple of 2'),
    ('grad_accum_steps', 0, 'grad_accum_steps=0'),
    ('base_lr', -1.0, 'base_lr=-1.0'),
    ('compute_dtype', 'float16', "compute_dtype='float16'"),
    ('data.crop_scale', (0.5, 0.2), 'data.crop_scale=(0.5, 0.2)'),
])
def test_impossible_configs_fail_before_compiling_naming_the_field(field, value, message):
  config = pretraining_config('mixmae', size='base')
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as e:
    validate(config, global_devices=8, process_count=1)
  assert message in str(e.value)


def test_all_problems_are_reported_at_once():
  config = pretraining_config('mixmae', size='base')
  config.model.encoder.img_size = 200
  config.batch_size = 7
  with pytest.raises(ConfigError) as e:
    validate(config, global_devices=8)
  assert 'img_size=200' in str(e.value) and 'batch_size=7' in str(e.value)


def test_an_objective_refuses_an_encoder_it_cannot_use():
  config = pretraining_config('mixmae', 'vit', 'base')
  with pytest.raises(ConfigError, match="model.encoder.name='vit'.*use swin"):
    validate(config, global_devices=8)
  config = pretraining_config('mae', 'swin', 'base')
  with pytest.raises(ConfigError, match="model.encoder.name='swin'.*use vit"):
    validate(config, global_devices=8)
  config = pretraining_config('mae', 'vit', 'base')
  config.model.scan_blocks = True
  with pytest.raises(ConfigError, match='model.scan_blocks=True'):
    validate(config, global_devices=8)


ALL_CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob(
    '*.py') if not p.stem.startswith('_'))


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_config_knows_its_arguments_and_refuses_others(path):
  spec = importlib.util.spec_from_file_location(f'config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for word in module.ARGS:  # each alone, and all together
    assert module.get_config(word) is not None
  assert module.get_config(','.join(module.ARGS)) is not None
  with pytest.raises(ValueError, match=rf"config {path.stem} has no argument 'bogus': "):
    module.get_config('bogus')
  with pytest.raises(ValueError, match="has no argument 'bogus'"):
    module.get_config(','.join(module.ARGS + ('bogus',)))  # one bad word among good ones
