"""Load any checkpoint this package writes as a ready Flax module and its params.

  model, params = mixmae_jax.load('/tmp/mixmae_demo')          # a workdir, or
  model, params = mixmae_jax.load('/tmp/mixmae_demo/checkpoints/300')   # one step
  out = model.apply({'params': params}, images, mask=mask)      # pretraining: loss, pred, mask
  logits = model.apply({'params': params}, images)              # classifier

Needs neither TensorFlow nor the devices the checkpoint was written on.
"""
import os
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mixmae_jax.architecture import ClassifierConfig, MixMAEConfig, arch_from_dict
from mixmae_jax.checkpointing import CHECKPOINT_DIR, CheckpointError, read_meta


def build_model(arch, dtype=jnp.float32) -> nn.Module:
  """The Flax module for an architecture config (MixMAE pretraining model or classifier)."""
  # Imported here: each pulls in its own model code only when asked for.
  if isinstance(arch, MixMAEConfig):
    from mixmae_jax.objectives.mixmae import MixMAE  # pylint: disable=import-outside-toplevel
    return MixMAE(arch, dtype=dtype)
  if isinstance(arch, ClassifierConfig):
    from mixmae_jax.classifier import SwinClassifier  # pylint: disable=import-outside-toplevel
    return SwinClassifier(arch, dtype=dtype)
  raise TypeError(f'no model for architecture {type(arch).__name__}')


def abstract_params(model: nn.Module) -> Any:
  """Shapes and dtypes of a model's params, computed without allocating them."""
  size = model.config.encoder.img_size
  rngs = {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(0)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((2, size, size, 3))))['params']


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
  model = build_model(arch_from_dict(meta['arch']), dtype)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params(model))
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
