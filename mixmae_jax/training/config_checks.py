"""Check a training config against the machine before anything is compiled.

Every problem is reported at once, each naming the offending field, its value and the fix. The
pretraining checks ask the objective (named by `model.objective.name`) for its architecture's
problems and its batch rule; nothing here knows a particular objective.
"""
import math
import os
from typing import Any, Iterator, List, Tuple

import jax.numpy as jnp

from mixmae_jax import networks, objectives
from mixmae_jax.networks.compute_options import options_from_config
from mixmae_jax.training.optimizer import SCHEDULES

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class ConfigError(ValueError):
  """A config that cannot work; the message lists every problem found."""


def _leaves(node, prefix: str = '') -> Iterator[Tuple[str, Any]]:
  for key, value in node.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def nonfinite_problems(config) -> List[str]:
  """Every float field (and float in a tuple field) that is NaN or infinite: checked before
  anything else, since no range check can catch a NaN (every comparison with it is False)."""
  out = []
  for name, value in _leaves(config):
    values = value if isinstance(value, (tuple, list)) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
      out.append(f'{name}={value} must be a finite number.')
  return out


def raise_nonfinite(config) -> None:
  problems = nonfinite_problems(config)
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))


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
  elif c.batch_size < 1:
    out.append(f'batch_size={c.batch_size} must be at least 1 (global images per update): use '
               f'e.g. {split * n}.')
  elif c.batch_size % split:
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


def host_memory_bytes() -> int:
  """This machine's physical memory (0 when the OS does not say)."""
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    return 0


def _gib(n: float) -> str:
  return f'{n / 2**30:.1f} GiB'


def input_size_problems(c, image_size: int, process_count: int,
                        field: str = 'model.encoder.img_size') -> List[str]:
  """An input size whose batches cannot fit this host's memory, with the arithmetic: the
  pipeline holds about (2 + data.device_prefetch) uint8 batches on the host."""
  memory = host_memory_bytes()
  if c.batch_size < 1 or image_size < 1 or not memory:
    return []
  per_host = max(c.batch_size // max(process_count, 1), 1)
  image = image_size * image_size * 3
  batches = 2 + max(c.data.device_prefetch, 0)
  held = per_host * image * batches
  if held <= memory:
    return []
  return [f'{field}={image_size}: one image is {image_size}x{image_size}x3 bytes = '
          f'{_gib(image)}; {per_host} images per host x {batches} batches held by the input '
          f'pipeline (2 + data.device_prefetch) = {_gib(held)}, more than this host\'s '
          f'{_gib(memory)}. Use a smaller size or batch.']


# Taller pictures are refused by many viewers and image tools (JPEG's and TIFF viewers' limit).
MAX_PICTURE_PIXELS_TALL = 65_500


def picture_problems(c, image_size: int) -> List[str]:
  rows = c.reconstruction_images
  if rows * image_size <= MAX_PICTURE_PIXELS_TALL:
    return []
  fits = MAX_PICTURE_PIXELS_TALL // image_size
  return [f'reconstruction_images={rows} draws {rows} rows of {image_size} px: a picture '
          f'{rows * image_size} px tall, over the {MAX_PICTURE_PIXELS_TALL} px viewers accept. '
          + (f'Use at most {fits} at this input size.' if fits else
             'Set it to 0 (no pictures) at this input size.')]


def run_guard_problems(c) -> List[str]:
  """The workdir lease and input guards (`lease_*`, `data.max_image_pixels`,
  `data.stall_seconds`)."""
  out = []
  beat, stale = c.get('lease_heartbeat_seconds', 30.0), c.get('lease_stale_seconds', 120.0)
  if not 0 < beat < stale / 2:
    out.append(f'lease_heartbeat_seconds={beat} and lease_stale_seconds={stale}: the heartbeat '
               f'must be > 0 and under half the stale time, or a live run is taken over.')
  if c.data.get('max_image_pixels', 1) < 1:
    out.append(f'data.max_image_pixels={c.data.max_image_pixels} must be at least 1.')
  if c.data.get('stall_seconds', 1.0) <= 0:
    out.append(f'data.stall_seconds={c.data.stall_seconds} must be > 0.')
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
               f'(e.g. (700,) and 0.1).')
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
  for name, top in (('crop_scale', 1.0), ('crop_ratio', math.inf)):
    bounds = tuple(d[name]) if isinstance(d[name], (tuple, list)) else (d[name],)
    if len(bounds) != 2:
      out.append(f'data.{name}={bounds} needs two values (min, max), e.g. '
                 f'{(0.2, 1.0) if name == "crop_scale" else (0.75, 1.333)}.')
    elif not 0.0 < bounds[0] <= bounds[1] <= top:
      out.append(f'data.{name}={bounds} must satisfy 0 < min <= max' +
                 (' <= 1.' if top == 1.0 else '.'))
  if d.num_parallel_calls == 0 or d.num_parallel_calls < -1:
    out.append(f'data.num_parallel_calls={d.num_parallel_calls}: use -1 (tf.data chooses) or a '
               f'number of threads >= 1.')
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
    return module, objectives.objective_config(config.model)
  except ValueError as e:
    raise ConfigError(f'invalid config:\n  model.objective.name / model.encoder.name: {e}') from e


def validate(config, *, global_devices: int, process_count: int = 1) -> None:
  """Raise ConfigError listing every problem of a pretraining config on this machine."""
  raise_nonfinite(config)
  module, arch = pretraining_arch(config)
  problems = ['model.' + p for p in arch.problems()]
  problems += compute_problems(config.model, arch.encoder.name)
  if not problems:  # the batch rule may need a well-formed architecture
    problems += batch_problems(config, global_devices, process_count, module.batch_multiple(arch))
  else:
    problems += batch_problems(config, global_devices, process_count)
  problems += _schedule_problems(config)
  problems += image_problems(config.data)
  problems += run_guard_problems(config)
  problems += input_size_problems(config, arch.encoder.img_size, process_count)
  problems += picture_problems(config, arch.encoder.img_size)
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))
