"""Check a fine-tuning / probing / k-NN config before anything is compiled.

Like `config_checks.py` for pretraining: every problem at once, each naming the field, its value
and the fix.
"""
from typing import List

from mixmae_jax import networks
from mixmae_jax.data import rand_augment
from mixmae_jax.evaluation.finetune_config import TASKS
from mixmae_jax.networks.classifier import ClassifierConfig
from mixmae_jax.training import config_checks
from mixmae_jax.training.config_checks import ConfigError


def classifier_arch(m, num_classes: int) -> ClassifierConfig:
  """A ClassifierConfig from the `model` fields (before any pretrained resolution change)."""
  try:
    encoder = networks.encoder_config(m.encoder)
  except ValueError as e:
    raise ConfigError(f'invalid config:\n  model.encoder.name: {e}') from e
  return ClassifierConfig(encoder=encoder, num_classes=num_classes)


def mixes_pairs(c) -> bool:
  a = c.augment
  return c.task == 'finetune' and a.mixup_prob > 0 and (a.mixup_alpha > 0 or a.cutmix_alpha > 0)


def _batch_problems(c, global_devices: int, process_count: int) -> List[str]:
  multiple = (2, 'Mixup/CutMix (off with augment.mixup_prob=0) mixes image i with image B-1-i') \
      if mixes_pairs(c) else (1, '')
  out = config_checks.batch_problems(c, global_devices, process_count, multiple)
  if c.eval_batch_size < 1 or c.eval_batch_size % global_devices:
    out.append(f'eval_batch_size={c.eval_batch_size} must be a positive multiple of the '
               f'{global_devices} devices.')
  if c.eval_batch_size % max(process_count, 1):
    out.append(f'eval_batch_size={c.eval_batch_size} does not split over {process_count} hosts.')
  return out


def _schedule_problems(c) -> List[str]:
  out = config_checks.optimizer_problems(c, 'fine-tuning uses 5e-4, probing 0.1')
  if not 0.0 <= c.min_lr <= c.base_lr * c.batch_size / 256:
    out.append(f'min_lr={c.min_lr} must lie in [0, base_lr x batch_size / 256].')
  if not 0.0 < c.layer_decay <= 1.0:
    out.append(f'layer_decay={c.layer_decay} must lie in (0, 1]; 1 turns it off.')
  if not 0.0 <= c.ema_decay < 1.0:
    out.append(f'ema_decay={c.ema_decay} must lie in [0, 1).')
  if c.eval_every_steps == 0 or c.eval_every_steps < -1:
    out.append(f'eval_every_steps={c.eval_every_steps}: use a step count, or -1 for every epoch.')
  return out


def _data_problems(d) -> List[str]:
  out = []
  if bool(d.train_folder) != bool(d.eval_folder):
    out.append(f'data.train_folder={d.train_folder!r} and data.eval_folder={d.eval_folder!r}: '
               f'set both (ImageFolder trees with the same class folders) or neither.')
  elif not d.train_folder and not d.tfds_name:
    out.append('no labelled data: set data.train_folder and data.eval_folder, or '
               'data.tfds_name (e.g. imagenet2012).')
  if not 0.0 < d.eval_crop_pct <= 1.0:
    out.append(f'data.eval_crop_pct={d.eval_crop_pct} must lie in (0, 1] (224/256 at 224, 1.0 '
               f'at 384).')
  return out + config_checks.image_problems(d)


def _augment_problems(a) -> List[str]:
  out = []
  if a.rand_augment:
    try:
      rand_augment.parse_policy(a.rand_augment)
    except ValueError as e:
      out.append(f'augment.rand_augment: {e}')
  for name in ('erase_prob', 'mixup_prob', 'mixup_switch_prob'):
    if not 0.0 <= a[name] <= 1.0:
      out.append(f'augment.{name}={a[name]} must lie in [0, 1].')
  for name in ('mixup_alpha', 'cutmix_alpha'):
    if a[name] < 0:
      out.append(f'augment.{name}={a[name]} must be >= 0 (0 turns it off).')
  if not 0.0 <= a.label_smoothing < 1.0:
    out.append(f'augment.label_smoothing={a.label_smoothing} must lie in [0, 1).')
  return out


def _task_problems(c) -> List[str]:
  out = []
  if c.task not in TASKS:
    out.append(f'task={c.task!r}: use one of {", ".join(TASKS)}.')
  if c.probe.optimizer not in ('lars', 'sgd'):
    out.append(f'probe.optimizer={c.probe.optimizer!r}: use lars or sgd.')
  if c.probe.norm_examples < 1 or not 0.0 <= c.probe.momentum < 1.0:
    out.append(f'probe.norm_examples={c.probe.norm_examples} must be >= 1 and probe.momentum='
               f'{c.probe.momentum} in [0, 1).')
  if c.knn.k < 1 or c.knn.temperature <= 0:
    out.append(f'knn.k={c.knn.k} must be >= 1 and knn.temperature={c.knn.temperature} > 0.')
  if c.model.num_classes < 0:
    out.append(f'model.num_classes={c.model.num_classes} must be >= 0 (0: from the data).')
  return out


def validate(config, *, global_devices: int, process_count: int = 1) -> None:
  """Raise ConfigError listing every problem of a fine-tuning config on this machine."""
  config_checks.raise_nonfinite(config)
  arch = classifier_arch(config.model, max(config.model.num_classes, 1))
  problems = ['model.' + p for p in arch.problems()]
  problems += config_checks.compute_problems(config.model, arch.encoder.name)
  problems += _task_problems(config)
  problems += _batch_problems(config, global_devices, process_count)
  problems += _schedule_problems(config)
  problems += _data_problems(config.data)
  problems += _augment_problems(config.augment)
  problems += config_checks.run_guard_problems(config)
  problems += config_checks.input_size_problems(config, arch.encoder.img_size, process_count)
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))
