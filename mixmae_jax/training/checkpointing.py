"""Orbax checkpoints: params, optimizer state and a JSON record of everything needed to resume.

Layout of WORKDIR/checkpoints/<step>/: `params` and `opt_state` (unreplicated host arrays, so a
checkpoint written on N devices restores on any device count, a notebook's single CPU included)
and `meta` (JSON: the architecture, the config, every host's data-stream position). Orbax
commits a step atomically, so a run killed mid-save leaves the previous checkpoints intact.
"""
import logging
import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(RuntimeError):
  """A checkpoint that exists but cannot be read (truncated, foreign, or incomplete)."""


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints; local paths made absolute (Orbax requires it), URLs kept."""
  if '://' in workdir:
    return workdir.rstrip('/') + '/' + CHECKPOINT_DIR
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """Periodic saving (keep the last N) and restoring of one training run."""

  def __init__(self, directory: str, keep: int = 3, create: bool = True):
    self.directory = directory
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_names=('params', 'opt_state', 'meta'))

  def steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, params: Any, opt_state: Optional[Any],
           meta: Dict[str, Any]) -> None:
    """Start writing a checkpoint (asynchronously); `params`/`opt_state` are host arrays.

    Without `opt_state` (converted weights) the checkpoint loads but cannot resume training.
    """
    items = {'params': ocp.args.StandardSave(params), 'meta': ocp.args.JsonSave(meta)}
    if opt_state is not None:
      items['opt_state'] = ocp.args.StandardSave(opt_state)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any,
              shardings: Optional[Tuple[Any, Any]] = None) -> Tuple[Any, Any, Dict[str, Any]]:
    """Params, optimizer state (shaped like the abstract trees) and meta of one step.

    The arrays come back placed by `shardings` (trees of `jax.sharding.Sharding` for params and
    optimizer state), else whole on the first local device, whatever devices wrote them.
    """
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(restore_target(abstract_params,
                                                         shardings and shardings[0])),
          opt_state=ocp.args.StandardRestore(restore_target(abstract_opt_state,
                                                            shardings and shardings[1])),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      raise CheckpointError(
          f'checkpoint step {step} in {self.directory} could not be read ({type(e).__name__}: '
          f'{e}). It may be truncated or from another model; move it aside to resume from an '
          f'earlier one.') from e
    return out['params'], out['opt_state'], dict(out['meta'])

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any,
                     shardings: Optional[Tuple[Any, Any]] = None):
    """The newest readable checkpoint, falling back to older ones; None if there is none."""
    failures = []
    for step in reversed(self.steps()):
      try:
        return (step,) + self.restore(step, abstract_params, abstract_opt_state, shardings)
      except CheckpointError as e:
        log.error('%s', e)
        failures.append(step)
    if failures:
      raise CheckpointError(f'no readable checkpoint in {self.directory} (tried steps '
                            f'{failures}); refusing to start from scratch over them.')
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def restore_target(abstract: Any, shardings: Optional[Any] = None) -> Any:
  """What Orbax restores into: the abstract shapes, placed by `shardings` (a matching tree) or
  whole on the first local device, so a checkpoint written on any devices, sharded or not, reads
  on these."""
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                      shardings)


def read_meta(directory: str, step: Optional[int] = None) -> Tuple[int, Dict[str, Any]]:
  """(step, meta) of a checkpoint directory's newest (or given) step, without any arrays."""
  manager = ocp.CheckpointManager(directory, item_names=('params', 'opt_state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f'no checkpoint found in {directory}.')
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  return step, dict(meta)
