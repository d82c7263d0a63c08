"""Check a training config against the machine before anything is compiled.

Every problem is reported at once, each naming the offending field, its value and the fix. The
pretraining checks ask the objective (named by `model.objective.name`) for its architecture's
problems and its batch rule; nothing here knows a particular objective.
"""
from typing import List, Tuple

import jax.numpy as jnp

from mixmae_jax import networks, objectives
from mixmae_jax.networks.compute_options import options_from_config
from mixmae_jax.training.optimizer import SCHEDULES

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class ConfigError(ValueError):
  """A config that cannot work; the message lists every problem found."""


def resolve_compute_dtype(name: str, backend: str):
  """'auto' is bfloat16 on GPU/TPU and float32 on CPU (where bf16 matmuls are slow)."""
  if name == 'auto':
    return jnp.float32 if backend == 'cpu' else jnp.bfloat16
  return COMPUTE_DTYPES[name]


def batch_problems(c, global_devices: int, process_count: int,
                   multiple: Tuple[int, str] = (1, '')) -> List[str]:
  """`batch_size` against devices, hosts and `grad_accum_steps`. `multiple` = (n, why): each
  device's micro-batch must be a multiple of n, for the reason `why` gives."""
  out = []
  split = global_devices * c.grad_accum_steps
  n, why = multiple
  if c.grad_accum_steps < 1:
    out.append(f'grad_accum_steps={c.grad_accum_steps} must be at least 1.')
  elif c.batch_size < 1 or c.batch_size % split:
    fix = max(split * n, (c.batch_size // (n * split)) * n * split)
    out.append(f'batch_size={c.batch_size} must be a multiple of devices ({global_devices}) x '
               f'grad_accum_steps ({c.grad_accum_steps}) = {split}: use e.g. {fix}.')
  elif (c.batch_size // split) % n:
    fix = -(-c.batch_size // (n * split)) * n * split
    out.append(f'batch_size={c.batch_size} gives {c.batch_size // split} images per device and '
               f'micro-batch; {why}, so it must be a multiple of {n}: use e.g. {fix}.')
  if c.batch_size % max(process_count, 1):
    out.append(f'batch_size={c.batch_size} does not split over {process_count} hosts.')
  return out


def optimizer_problems(c, base_lr_hint: str) -> List[str]:
  """Run length, AdamW, logging, checkpointing and dtype fields shared by every training task."""
  out = []
  if c.num_train_steps <= 0 and c.num_epochs <= 0:
    out.append(f'num_epochs={c.num_epochs} and num_train_steps={c.num_train_steps}: set one '
               f'of them > 0.')
  if c.base_lr <= 0:
    out.append(f'base_lr={c.base_lr} must be > 0 ({base_lr_hint}).')
  for name in ('adam_b1', 'adam_b2'):
    if not 0.0 <= c[name] < 1.0:
      out.append(f'{name}={c[name]} must lie in [0, 1).')
  for name in ('weight_decay', 'grad_clip_norm'):
    if c[name] < 0:
      out.append(f'{name}={c[name]} must be >= 0 (0 turns it off).')
  for name in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    if c[name] < 1:
      out.append(f'{name}={c[name]} must be at least 1.')
  if c.compute_dtype not in ('auto', *COMPUTE_DTYPES):
    out.append(f'compute_dtype={c.compute_dtype!r}: use auto, bfloat16 or float32.')
  first, last = tuple(c.get('profile_steps', (0, 0)))
  if (first, last) != (0, 0) and not 0 < first <= last:
    out.append(f'profile_steps={(first, last)}: give (first, last) with 0 < first <= last, or '
               f'(0, 0) for no trace.')
  return out


def _schedule_problems(c) -> List[str]:
  out = optimizer_problems(c, 'the recipes use 1.5e-4')
  schedule = c.get('lr_schedule', 'cosine')
  if schedule not in SCHEDULES:
    out.append(f'lr_schedule={schedule!r}: use one of {", ".join(SCHEDULES)}.')
  elif schedule == 'step' and (not c.lr_decay_epochs or min(c.lr_decay_epochs) <= 0 or
                               not 0.0 < c.lr_decay_factor < 1.0):
    out.append(f'lr_decay_epochs={tuple(c.lr_decay_epochs)} and lr_decay_factor='
               f'{c.lr_decay_factor}: the step schedule needs epochs > 0 and a factor in (0, 1) '
               f'(SimMIM: (700,) and 0.1).')
  if c.min_lr < 0 or c.min_lr > c.base_lr:
    out.append(f'min_lr={c.min_lr} must lie in [0, base_lr].')
  if c.get('state_sharding', 'replicated') not in ('replicated', 'sharded'):
    out.append(f'state_sharding={c.state_sharding!r}: use replicated (a full copy per device) or '
               f'sharded (split over the devices, for Large and Huge).')
  if c.reconstruction_every_steps < 0 or c.reconstruction_images < 0:
    out.append('reconstruction_every_steps and reconstruction_images must be >= 0 (0 = only at '
               'the end / none).')
  return out


def image_problems(d) -> List[str]:
  """Crop and normalisation fields of a `data` config."""
  out = []
  lo, hi = d.crop_scale
  if not 0.0 < lo <= hi <= 1.0:
    out.append(f'data.crop_scale={tuple(d.crop_scale)} must satisfy 0 < min <= max <= 1.')
  lo, hi = d.crop_ratio
  if not 0.0 < lo <= hi:
    out.append(f'data.crop_ratio={tuple(d.crop_ratio)} must satisfy 0 < min <= max.')
  if len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0:
    out.append(f'data.mean={tuple(d.mean)} and data.std={tuple(d.std)} need 3 values each, '
               f'std > 0.')
  if d.device_prefetch < 0:
    out.append(f'data.device_prefetch={d.device_prefetch} must be >= 0.')
  if d.get('resize_method', 'bicubic') not in ('bicubic', 'bilinear'):
    out.append(f'data.resize_method={d.resize_method!r}: use bicubic (the recipes) or bilinear.')
  return out


def compute_problems(m, encoder_name: str) -> List[str]:
  """`model.attention`, `scan_blocks` and `remat`, for an encoder family."""
  out = ['model.' + p for p in options_from_config(m).problems()]
  if m.get('scan_blocks', False) and not networks.encoder_module(encoder_name).SCANS_BLOCKS:
    out.append(f'model.scan_blocks=True: the {encoder_name} encoder runs its blocks unrolled '
               f'(no scanned form). Set it to False.')
  return out


def pretraining_arch(config):
  """(objective module, architecture) of a pretraining config; ConfigError for unknown names."""
  try:
    module = objectives.objective_module(config.model.objective.name)
    return module, module.config_from_fields(config.model)
  except ValueError as e:
    raise ConfigError(f'invalid config:\n  model.objective.name / model.encoder.name: {e}') from e


def validate(config, *, global_devices: int, process_count: int = 1) -> None:
  """Raise ConfigError listing every problem of a pretraining config on this machine."""
  module, arch = pretraining_arch(config)
  problems = ['model.' + p for p in arch.problems()]
  problems += compute_problems(config.model, arch.encoder.name)
  if not problems:  # the batch rule may need a well-formed architecture
    problems += batch_problems(config, global_devices, process_count, module.batch_multiple(arch))
  else:
    problems += batch_problems(config, global_devices, process_count)
  problems += _schedule_problems(config)
  problems += image_problems(config.data)
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))
