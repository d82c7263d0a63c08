"""Load any checkpoint this package writes as a ready Flax module and its params.

  model, params = mixmae_jax.load('WORKDIR')                    # a workdir, or
  model, params = mixmae_jax.load('WORKDIR/checkpoints/300')    # one step
  out = model.apply({'params': params}, images, mask=mask)      # pretraining: loss, pred, mask
  logits = model.apply({'params': params}, images)              # classifier

The model is rebuilt from the architecture the checkpoint records (`architectures.py`): any
pretraining objective, a classifier, or an encoder alone. Needs neither TensorFlow nor the
devices the checkpoint was written on.
"""
import os
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mixmae_jax import architectures
from mixmae_jax.training.checkpointing import (CHECKPOINT_DIR, CheckpointError, read_meta,
                                               restore_target)


def _resolve(path: str, step: Optional[int]) -> Tuple[str, Optional[int]]:
  """(checkpoints directory, step) for a workdir, a checkpoints dir or a step dir."""
  path = str(path).rstrip('/')
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    return os.path.join(path, CHECKPOINT_DIR), step
  base = os.path.basename(path)
  if base.isdigit() and step is None:
    return os.path.dirname(path), int(base)
  return path, step


def load(path: str, step: Optional[int] = None, dtype=jnp.float32) -> Tuple[nn.Module, Any]:
  """(model, params) from a checkpoint: a workdir, its checkpoints dir, or one step's dir.

  The newest step is used unless `step` (or a step directory) says otherwise. `dtype` is the
  compute dtype of the returned module; params are float32 as saved.
  """
  directory, step = _resolve(os.path.abspath(path) if '://' not in str(path) else path, step)
  step, meta = read_meta(directory, step)
  if 'arch' not in meta:
    raise CheckpointError(f'checkpoint step {step} in {directory} records no architecture.')
  model = architectures.build_model(architectures.from_dict(meta['arch']), dtype)
  target = restore_target(architectures.abstract_params(model))
  manager = ocp.CheckpointManager(directory, item_names=('params', 'opt_state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))
  except Exception as e:  # orbax raises many types for unreadable files
    raise CheckpointError(f'params of checkpoint step {step} in {directory} could not be read '
                          f'({type(e).__name__}: {e}).') from e
  finally:
    manager.close()
  return model, jax.tree.map(jnp.asarray, restored['params'])
