"""Check a training config against the machine before anything is compiled.

Every problem is reported at once, each naming the offending field, its value and the fix.
"""
from typing import List

import jax.numpy as jnp

from mixmae_jax.architecture import mixmae_arch
from mixmae_jax.compute_options import options_from_config

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class ConfigError(ValueError):
  """A config that cannot work; the message lists every problem found."""


def resolve_compute_dtype(name: str, backend: str):
  """'auto' is bfloat16 on GPU/TPU and float32 on CPU (where bf16 matmuls are slow)."""
  if name == 'auto':
    return jnp.float32 if backend == 'cpu' else jnp.bfloat16
  return COMPUTE_DTYPES[name]


def batch_problems(c, global_devices: int, process_count: int,
                   pairs: str = '') -> List[str]:
  """`batch_size` against devices, hosts and `grad_accum_steps`. `pairs`, when set, says what
  pairs image i with B-1-i, so that each device's micro-batch must be even."""
  out = []
  split = global_devices * c.grad_accum_steps
  if c.grad_accum_steps < 1:
    out.append(f'grad_accum_steps={c.grad_accum_steps} must be at least 1.')
  elif c.batch_size < 1 or c.batch_size % split:
    fix = max(split * 2, (c.batch_size // (2 * split)) * 2 * split)
    out.append(f'batch_size={c.batch_size} must be a multiple of devices ({global_devices}) x '
               f'grad_accum_steps ({c.grad_accum_steps}) = {split}: use e.g. {fix}.')
  elif pairs and (c.batch_size // split) % 2:
    out.append(f'batch_size={c.batch_size} gives {c.batch_size // split} images per device and '
               f'micro-batch; {pairs} pairs image i with B-1-i, so it must be even: use '
               f'{2 * c.batch_size}.')
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
  return out


def _schedule_problems(c) -> List[str]:
  out = optimizer_problems(c, 'the recipe uses 1.5e-4')
  if c.min_lr < 0 or c.min_lr > c.base_lr:
    out.append(f'min_lr={c.min_lr} must lie in [0, base_lr].')
  if c.reconstruction_every_steps < 0 or c.reconstruction_pairs < 0:
    out.append('reconstruction_every_steps and reconstruction_pairs must be >= 0 (0 = only at '
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
  return out


def validate(config, *, global_devices: int, process_count: int = 1) -> None:
  """Raise ConfigError listing every problem of a pretraining config on this machine."""
  problems = ['model.' + p for p in mixmae_arch(config.model).problems()]
  problems += ['model.' + p for p in options_from_config(config.model).problems()]
  problems += batch_problems(config, global_devices, process_count, pairs='MixMAE')
  problems += _schedule_problems(config)
  problems += image_problems(config.data)
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))
