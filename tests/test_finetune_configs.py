"""Shipped fine-tuning and probing configs validate and carry the published recipes."""
import importlib.util
import pathlib

import pytest

from mixmae_jax.architecture import MIXMIM_WINDOWS_384
from mixmae_jax.finetune_checks import classifier_arch, validate

CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if p.stem.startswith(('finetune_', 'linprobe_')))


def _load(stem, arg=None):
  path = next(p for p in CONFIGS if p.stem == stem)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize('stem', [p.stem for p in CONFIGS])
def test_shipped_configs_validate(stem):
  config = _load(stem)
  validate(config, global_devices=8)
  assert classifier_arch(config.model, 1000).problems() == []
  if not stem.endswith('_demo'):
    small = _load(stem, 'runlocal')
    small.data.train_folder, small.data.eval_folder = '/data/train', '/data/val'
    validate(small, global_devices=1)
    assert small.model.img_size < config.model.img_size


def test_base_recipe_is_mixmims():
  c = _load('finetune_swin_base_w14')
  assert (c.task, c.batch_size, c.num_epochs, c.warmup_epochs) == ('finetune', 1024, 100, 5)
  assert (c.base_lr, c.min_lr, c.layer_decay, c.weight_decay) == (5e-4, 1e-6, 0.7, 0.05)
  assert (c.adam_b1, c.adam_b2, c.model.drop_path_rate) == (0.9, 0.999, 0.1)
  a = c.augment
  assert a.rand_augment == 'rand-m9-mstd0.5-inc1' and a.label_smoothing == 0.1
  assert (a.mixup_alpha, a.cutmix_alpha, a.mixup_switch_prob, a.erase_prob) == (0.8, 1.0, 0.5,
                                                                                0.25)
  assert c.data.eval_crop_pct == 224 / 256 and c.data.crop_scale == (0.08, 1.0)
  assert c.data.tfds_name == 'imagenet2012'


def test_384_and_large_variants():
  c = _load('finetune_swin_base_w16_384')
  assert c.model.img_size == 384 and tuple(c.model.window_sizes) == MIXMIM_WINDOWS_384
  assert c.data.eval_crop_pct == 1.0
  large = _load('finetune_swin_large_w14')
  assert large.model.embed_dim == 192 and large.layer_decay == 0.8


def test_linear_probe_is_maes_protocol():
  c = _load('linprobe_swin_base_w14')
  assert (c.task, c.batch_size, c.num_epochs, c.warmup_epochs) == ('linear_probe', 16384, 90, 10)
  assert (c.base_lr, c.weight_decay, c.probe.optimizer) == (0.1, 0.0, 'lars')
  a = c.augment
  assert not a.rand_augment and a.mixup_alpha == a.cutmix_alpha == a.erase_prob == 0
