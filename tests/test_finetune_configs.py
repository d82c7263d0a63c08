"""Shipped fine-tuning and probing configs validate and carry the published recipes."""
import importlib.util
import pathlib

import pytest

from mixmae_jax.networks.swin import MIXMIM_WINDOWS_384
from mixmae_jax.evaluation.finetune_checks import classifier_arch, validate

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
    assert small.model.encoder.img_size < config.model.encoder.img_size
  if stem.endswith('_demo'):  # the demo encoder of the other family, as the README runs it
    validate(_load(stem, 'vit'), global_devices=8)


def test_base_recipe_is_mixmims():
  c = _load('finetune_swin_base_w14')
  assert (c.task, c.batch_size, c.num_epochs, c.warmup_epochs) == ('finetune', 1024, 100, 5)
  assert (c.base_lr, c.min_lr, c.layer_decay, c.weight_decay) == (5e-4, 1e-6, 0.7, 0.05)
  assert (c.adam_b1, c.adam_b2, c.model.encoder.drop_path_rate) == (0.9, 0.999, 0.1)
  a = c.augment
  assert a.rand_augment == 'rand-m9-mstd0.5-inc1' and a.label_smoothing == 0.1
  assert (a.mixup_alpha, a.cutmix_alpha, a.mixup_switch_prob, a.erase_prob) == (0.8, 1.0, 0.5,
                                                                                0.25)
  assert c.data.eval_crop_pct == 224 / 256 and c.data.crop_scale == (0.08, 1.0)
  assert c.data.tfds_name == 'imagenet2012'


def test_384_and_large_variants():
  c = _load('finetune_swin_base_w16_384')
  assert c.model.encoder.img_size == 384
  assert tuple(c.model.encoder.window_sizes) == MIXMIM_WINDOWS_384
  assert c.data.eval_crop_pct == 1.0
  large = _load('finetune_swin_large_w14')
  assert large.model.encoder.embed_dim == 192 and large.layer_decay == 0.8


def test_mae_recipes():
  """MAE's fine-tuning (ViT-B: layer decay 0.65, drop path 0.1, global pool + fc_norm, learned
  position table; ViT-L: lr 1e-3, decay 0.75, drop path 0.2, 50 epochs) and linear probe (the
  cls token after the final norm)."""
  c = _load('finetune_mae_vit_base')
  e = c.model.encoder
  assert (e.name, e.embed_dim, e.depth, e.patch_size) == ('vit', 768, 12, 16)
  assert (e.pos_embed, e.global_pool, e.drop_path_rate) == ('learned', True, 0.1)
  assert (c.batch_size, c.num_epochs, c.base_lr, c.layer_decay) == (1024, 100, 5e-4, 0.65)
  assert c.augment.rand_augment == 'rand-m9-mstd0.5-inc1' and c.data.eval_crop_pct == 224 / 256
  large = _load('finetune_mae_vit_large')
  assert (large.base_lr, large.layer_decay, large.num_epochs) == (1e-3, 0.75, 50)
  assert (large.model.encoder.embed_dim, large.model.encoder.drop_path_rate) == (1024, 0.2)
  probe = _load('linprobe_mae_vit_base')
  assert probe.model.encoder.global_pool is False and probe.model.encoder.drop_path_rate == 0.0
  assert (probe.batch_size, probe.base_lr, probe.probe.optimizer) == (16384, 0.1, 'lars')


def test_linear_probe_is_maes_protocol():
  c = _load('linprobe_swin_base_w14')
  assert (c.task, c.batch_size, c.num_epochs, c.warmup_epochs) == ('linear_probe', 16384, 90, 10)
  assert (c.base_lr, c.weight_decay, c.probe.optimizer) == (0.1, 0.0, 'lars')
  a = c.augment
  assert not a.rand_augment and a.mixup_alpha == a.cutmix_alpha == a.erase_prob == 0
