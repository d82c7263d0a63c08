"""Load any checkpoint this package writes as a ready Flax module and its params.

  model, params = mixmae_jax.load('WORKDIR')                    # a workdir, or
  model, params = mixmae_jax.load('WORKDIR/checkpoints/300')    # one step
  out = model.apply({'params': params}, images, mask=mask)      # pretraining: loss, pred, mask
  logits = model.apply({'params': params}, images)              # classifier

The model is rebuilt from the architecture the checkpoint records (`architectures.py`): any
pretraining objective, a classifier, or an encoder alone. Needs neither TensorFlow nor the
devices the checkpoint was written on.

Params are verified as training verifies them (checksums when the checkpoint records them, and
no NaN or infinity). When the newest step is unreadable, the next older one is loaded with a
warning naming both (nothing is moved: loading never changes a workdir); a step asked for by
number is loaded or refused. Whatever goes wrong, the only error is a `CheckpointError` naming
the path.
"""
import logging
import os
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax import architectures
from mixmae_jax.training.checkpointing import CHECKPOINT_DIR, CheckpointError, Checkpointer

log = logging.getLogger(__name__)


def _resolve(path: str, step: Optional[int]) -> Tuple[str, Optional[int]]:
  """(checkpoints directory, step) for a workdir, a checkpoints dir or a step dir."""
  path = str(path).rstrip('/')
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    return os.path.join(path, CHECKPOINT_DIR), step
  base = os.path.basename(path)
  if base.isdigit() and step is None:
    return os.path.dirname(path), int(base)
  return path, step


def _load_step(ckpt: Checkpointer, step: int, dtype) -> Tuple[nn.Module, Any]:
  meta = ckpt.read_meta(step)
  if 'arch' not in meta:
    raise CheckpointError(f'checkpoint step {step} in {ckpt.directory} records no architecture.')
  try:
    model = architectures.build_model(architectures.from_dict(meta['arch']), dtype)
    target = architectures.abstract_params(model)
  except Exception as e:  # pylint: disable=broad-except  (a record from an unknown version)
    raise CheckpointError(f'checkpoint step {step} in {ckpt.directory} records an architecture '
                          f'this version cannot build ({type(e).__name__}: {e}).') from e
  params, _, _ = ckpt.restore(step, target)
  return model, jax.tree.map(jnp.asarray, params)


def load(path: str, step: Optional[int] = None, dtype=jnp.float32) -> Tuple[nn.Module, Any]:
  """(model, params) from a checkpoint: a workdir, its checkpoints dir, or one step's dir.

  The newest readable step is used unless `step` (or a step directory) names one. `dtype` is
  the compute dtype of the returned module; params are float32 as saved.
  """
  remote = '://' in str(path)
  if not remote and not os.path.exists(path):
    raise CheckpointError(f'{path} does not exist: give a workdir, its checkpoints directory '
                          f'or one step\'s directory.')
  directory, step = _resolve(path if remote else os.path.abspath(path), step)
  try:
    ckpt = Checkpointer(directory, keep=None, create=False)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{path} is not a checkpoint directory ({type(e).__name__}: '
                          f'{e}).') from e
  try:
    steps = [step] if step is not None else list(reversed(ckpt.steps()))
    if not steps:
      raise CheckpointError(f'no checkpoint found in {directory}.')
    failures = []
    for s in steps:
      try:
        loaded = _load_step(ckpt, s, dtype)
      except CheckpointError as e:
        failures.append(e)
        if step is None:
          log.warning('%s', e)
        continue
      if failures:
        log.warning('loaded step %d of %s instead of the unreadable newer step(s) %s', s,
                    directory, steps[:len(failures)])
      return loaded
    if len(failures) == 1:
      raise failures[0]
    raise CheckpointError(f'no readable checkpoint in {directory} (tried steps {steps}): '
                          f'{failures[0]}')
  finally:
    ckpt.close()
