"""The rows of the CIFAR-10 studies: what each pretrains, on which encoder, and how it is scored.

Two studies (`STUDIES`), each a table of rows run with the same data, schedule and evaluation:
- `mixedae`: MixedAE's options one factor at a time against MAE and naive mixing, on one small
  ViT at CIFAR's own 32 px (patches of 4 px: an 8x8 grid, 16 patches per image in a mix). Cheap
  (about 4 CPU minutes a pretraining), so the sweep affords a row per option.
- `methods`: the five methods, each on its own encoder family, at 128 px (CIFAR's photos
  upsampled), where each method's geometry is its paper's in proportion: the geometry of its CPU
  demo config (`configs/*_demo.py`): MixMAE mixes a 4x4 grid of 32 px units on a MixMIM Swin
  (stage grids 32, 16, 8, 4), MAE and MixedAE mask or mix 16 px patches of a ViT (8x8), UM-MAE
  keeps one 16 px unit of each 2x2 group of an 8x8 grid on its Swin or PVT, SimMIM masks 32 px
  units (4x4) of a standard Swin. The widths are the demos' (Swin 32, ViT 128): the table states
  each row's training FLOPs per image beside its CPU seconds.
Each pretraining row has a `random` row of its encoder: the same encoder, untrained, scored the
same way, which is what pretraining must beat.
"""
import dataclasses
import os
from typing import Dict, Tuple

from mixmae_jax.cli import config_files
from mixmae_jax.evaluation.finetune_config import finetune_config, linear_probe_config
from mixmae_jax.objectives.mixedae_config import VARIANTS
from mixmae_jax.training.config_defaults import pretraining_config

STUDIES = ('mixedae', 'methods')
TASKS = ('knn', 'linear_probe', 'finetune')


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a study: a pretraining (`config` a demo config name, or '' for the study's
  own) with `objective` field overrides, or, with `random_of`, an untrained encoder of the
  row named."""
  config: str = ''
  objective: Tuple[Tuple[str, object], ...] = ()
  random_of: str = ''


def _row(config: str = '', **objective) -> Row:
  return Row(config, tuple(objective.items()))


NAIVE = VARIANTS['naive']
# MixedAE as the methods table runs it: the paper's form (the sweep's table says which is best)
MIXEDAE_METHOD = {}

# one factor at a time from MixedAE's defaults: each option, and the contrastive weight
SWEEP = {**{f'mixedae_{name}': VARIANTS[name] for name in (
    'no_segments', 'segments_qk', 'head_mlp', 'target_attention', 'full_mixing')},
         'mixedae_weight_0.1': dict(contrastive_weight=0.1),
         'mixedae_weight_0.3': dict(contrastive_weight=0.3),
         # without segment embeddings images must be told apart by content: the options that
         # act on recognition (a head, the loss on TopK's scores) on top of that
         'mixedae_no_segments_head_mlp': {**VARIANTS['no_segments'], **VARIANTS['head_mlp']},
         'mixedae_no_segments_target_attention': {**VARIANTS['no_segments'],
                                                  **VARIANTS['target_attention']}}

ROWS = {
    'mixedae': {
        'mae': Row(objective=(('name', 'mae'),)),
        'naive_mixing': _row(**NAIVE),
        'mixedae': _row(),
        **{name: _row(**fields) for name, fields in SWEEP.items()},
        'random_vit': Row(random_of='mae'),
    },
    'methods': {
        'mixmae': _row('demo'),
        'mae': _row('mae_demo'),
        'mixedae': _row('mixedae_demo', **MIXEDAE_METHOD),
        'naive_mixing': _row('mixedae_demo', **NAIVE),
        'ummae_swin': _row('ummae_demo'),
        'ummae_pvt': _row('ummae_demo:pvt'),
        'simmim': _row('simmim_demo'),
        'random_mixmim_swin': Row(random_of='mixmae'),
        'random_vit': Row(random_of='mae'),
        'random_ummae_swin': Row(random_of='ummae_swin'),
        'random_pvt': Row(random_of='ummae_pvt'),
        'random_swin': Row(random_of='simmim'),
    },
}

# steps of each part; `per_class` / `val_per_class`: photos per class to train on / to score on
# (0: all)
SCHEDULES = {
    'mixedae': dict(pretrain=1200, batch=64, probe=500, finetune=300, per_class=0,
                    val_per_class=0),
    'methods': dict(pretrain=300, batch=64, probe=150, finetune=150, per_class=500,
                    val_per_class=0),
    'fast': dict(pretrain=4, batch=16, probe=2, finetune=2, per_class=8, val_per_class=4),
}


@dataclasses.dataclass(frozen=True)
class Data:
  """Where the photos come from: an ImageFolder tree ROOT/{train,val}/<class>/ or a TFDS
  dataset with a train and an evaluation split (CIFAR-10's are 'train' and 'test')."""
  root: str = ''
  tfds_name: str = ''
  tfds_data_dir: str = ''
  tfds_eval_split: str = 'test'
  train_examples: int = 0  # TFDS: take the first N training examples (0: all)


def _vit_32(e) -> None:
  """The mixedae study's ViT for 32x32 photos: patches of 4 px, width 128, 4 blocks."""
  e.img_size, e.patch_size, e.embed_dim, e.depth, e.num_heads = 32, 4, 128, 4, 4


def _pretraining_base(study: str, row: Row):
  if study == 'mixedae':
    fields = dict(row.objective)
    c = pretraining_config(fields.pop('name', 'mixedae'), 'vit', 'tiny')
    _vit_32(c.model.encoder)
    c.model.objective.decoder_dim, c.model.objective.decoder_depth = 64, 2
    c.model.objective.decoder_num_heads = 4
    c.data.crop_scale = (0.35, 1.0)  # a 0.2 crop of a 32 px photo is a few pixels upsampled
    c.base_lr = 4e-3
    c.model.objective.update(fields)
    return c
  c = config_files.load(config_files.resolve(row.config))  # the demo's geometry and lr
  c.model.objective.update(dict(row.objective))
  return c


def pretrain_config(study: str, name: str, data: Data, schedule: Dict[str, int], seed: int):
  """The pretraining config of a row (not a random one)."""
  c = _pretraining_base(study, ROWS[study][name])
  c.data.image_folder = os.path.join(data.root, 'train') if data.root else ''
  c.data.tfds_name, c.data.tfds_data_dir = data.tfds_name, data.tfds_data_dir
  if data.tfds_name and data.train_examples:
    c.data.tfds_split = f'train[:{data.train_examples}]'
  steps = schedule['pretrain']
  c.batch_size, c.num_train_steps, c.warmup_steps = schedule['batch'], steps, steps // 10
  c.log_every_steps, c.checkpoint_every_steps = max(1, min(100, steps // 5)), steps
  c.reconstruction_every_steps, c.reconstruction_images, c.seed = 0, 8, seed
  return c


def encoder_of(study: str, name: str):
  """(encoder family, encoder fields) of a row, random rows included."""
  row = ROWS[study][name]
  e = _pretraining_base(study, ROWS[study][row.random_of] if row.random_of else row).model.encoder
  return e.name, e


def evaluation_config(task: str, study: str, name: str, data: Data, pretrained: str,
                      schedule: Dict[str, int], seed: int):
  """k-NN, the linear probe or a short fine-tune of a row's encoder.

  Every encoder is read the same way: a ViT by its global pool (mean patch token, then
  LayerNorm: after a short pretraining its cls token carries little), the Swins and PVT by their
  averaged final norm. The probe is SGD on mild crops (0.8-1: it should measure the encoder, not
  fight the augmentation); the fine-tune is AdamW with layer decay, crops of 0.35-1, label
  smoothing and drop path 0.1, without RandAugment, Mixup or CutMix (too strong for a few
  hundred steps).
  """
  family, fields = encoder_of(study, name)
  probe = task in ('linear_probe', 'knn')
  c = (linear_probe_config if probe else finetune_config)('tiny', family)
  keep = {'drop_path_rate', 'global_pool'}
  c.model.encoder.update({k: v for k, v in fields.items() if k in c.model.encoder and
                          k not in keep and k not in _classifier_fields(c, probe)})
  if family == 'vit':
    c.model.encoder.global_pool = True
  c.task, c.pretrained, c.seed = task, pretrained, seed
  _labelled_data(c, data)
  c.data.eval_crop_pct = 1.0
  c.data.crop_scale = (0.8, 1.0) if probe else (0.35, 1.0)
  steps = schedule['probe' if probe else 'finetune']
  c.batch_size, c.eval_batch_size, c.num_train_steps = 128 if probe else 64, 500, max(1, steps)
  c.warmup_steps = steps // 10
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 100, steps, steps
  c.probe.optimizer, c.probe.norm_examples = 'sgd', 2000
  if probe:
    c.base_lr = 0.5
  else:
    c.base_lr, c.layer_decay, c.augment.rand_augment = 2e-3, 0.75, ''
    c.augment.mixup_alpha, c.augment.cutmix_alpha, c.augment.erase_prob = 0.0, 0.0, 0.0
  return c


def _classifier_fields(c, probe: bool) -> set:
  """The encoder fields evaluation chooses itself (window, head norm...), not the pretraining."""
  from mixmae_jax import networks  # pylint: disable=import-outside-toplevel
  module = networks.encoder_module(c.model.encoder.name)
  return set(module.PROBE_FIELDS if probe else module.CLASSIFIER_FIELDS)


def _labelled_data(c, data: Data) -> None:
  if data.root:
    c.data.train_folder = os.path.join(data.root, 'train')
    c.data.eval_folder = os.path.join(data.root, 'val')
    return
  c.data.tfds_name, c.data.tfds_data_dir = data.tfds_name, data.tfds_data_dir
  c.data.tfds_eval_split = data.tfds_eval_split
  if data.train_examples:
    c.data.tfds_train_split = f'train[:{data.train_examples}]'
