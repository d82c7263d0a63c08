"""Orbax checkpoints: params, optimizer state and a JSON record of everything needed to resume.

Layout of WORKDIR/checkpoints/<step>/: `params` and `opt_state` (one copy of each array, written
as it lies on the devices: whole, or each device's slice of a sharded state, so nothing is
gathered on one host; a checkpoint written on N devices restores on any device count and layout,
a notebook's single CPU included) and `meta` (JSON: the architecture, the config, every host's
data-stream position, and a checksum of every array). Orbax commits a step atomically, so a run
killed mid-save leaves the previous checkpoints intact.

Saving holds up training only while Orbax copies the arrays to host memory (each host its own
slices of a sharded state); the files are written from a background thread while the loop goes
on, and `wait` joins it. `on_commit(step)` is called once a step is on storage (not when its
save starts), and a background save that failed is reported by `poll` as soon as
the loop asks (it asks every step), naming the step that failed.

What can go wrong after the commit is caught at restore: a step whose files are missing,
truncated or altered (bit rot that the storage format does not notice itself is caught by the
checksums; non-finite params too) raises `CheckpointError` naming the step and what is wrong.
`restore_latest` then falls back to the newest readable step and moves each unreadable newer
one aside (renamed `<step>.unreadable-<time>`, never deleted), so training can pass that step
number again. Nothing here deletes a step except Orbax's `keep` rotation of steps it wrote.
"""
import concurrent.futures
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from mixmae_jax.networks import block_scan
from mixmae_jax.training import checksums

log = logging.getLogger(__name__)

CHECKPOINT_DIR = 'checkpoints'
COMMIT_LISTING_SECONDS = 1.0
ITEMS = ('params', 'opt_state', 'meta')
SET_ASIDE = 'unreadable'


class CheckpointError(RuntimeError):
  """A checkpoint that exists but cannot be read or written (truncated, altered, foreign,
  incomplete, or a directory that cannot be written); the message names the path and cause."""


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints; local paths made absolute (Orbax requires it), URLs kept."""
  if '://' in workdir:
    return workdir.rstrip('/') + '/' + CHECKPOINT_DIR
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def _cause(e: BaseException) -> str:
  """'OSError: [Errno 28] No space left on device': the first line of an exception."""
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'


# ---- noise ----

def _quiet_closed_event_loop_reports() -> None:
  """After a failed restore, Orbax's tensorstore callbacks find their asyncio loop closed and
  each reports `RuntimeError: Event loop is closed` as an unraisable exception: a hundred
  tracebacks that bury the one line that matters. Only those reports are silenced."""
  previous = sys.unraisablehook
  if getattr(previous, 'quiet_closed_loops', False):
    return

  def hook(unraisable):
    if (unraisable.exc_type is RuntimeError and
        str(unraisable.exc_value) == 'Event loop is closed'):
      return
    previous(unraisable)

  hook.quiet_closed_loops = True
  sys.unraisablehook = hook


def require_writable(directory: str) -> None:
  """Create `directory` and write a file in it, or raise CheckpointError with the cause first.

  Run before anything compiles: otherwise an unwritable directory is found at the first save,
  in Orbax's background thread, and reported after minutes of timeouts.
  """
  path = epath.Path(directory)
  probe = path / f'.write_test.{os.getpid()}'
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a remote store's own)
    raise CheckpointError(
        f'cannot write checkpoints to {directory}: {type(e).__name__}: {e}. Make it writable '
        f'(permissions, free space, a read-only mount?) or choose another --workdir.') from e


_WRITER: List[concurrent.futures.ThreadPoolExecutor] = []


def _writer() -> concurrent.futures.ThreadPoolExecutor:
  """The one thread that runs background saves (made at first use)."""
  if not _WRITER:
    _WRITER.append(concurrent.futures.ThreadPoolExecutor(1, 'checkpoint-writer'))
  return _WRITER[0]


def restore_target(abstract: Any, sharding_tree: Optional[Any] = None) -> Any:
  """What Orbax restores into: the abstract shapes, placed by `sharding_tree` (a matching tree)
  or whole on the first local device, so a checkpoint written on any devices, sharded or not,
  reads on these."""
  if sharding_tree is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sharding_tree = jax.tree.map(lambda _: device, abstract)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                      sharding_tree)


class Checkpointer:
  """Periodic saving (keep the last N) and verified restoring of one training run.

  `keep=None` keeps every step (a converted checkpoint must never rotate out another one);
  `create=False` opens a directory for reading only.
  """

  def __init__(self, directory: str, keep: Optional[int] = 3, create: bool = True,
               on_commit: Optional[Callable[[int], None]] = None):
    self.directory = directory
    if create:
      require_writable(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=ITEMS)
    self._pending: Optional[concurrent.futures.Future] = None
    self._uncommitted: List[int] = []  # started by `save`, not yet known to be on storage
    self._listed_at = 0.0
    self.on_commit = on_commit

  def steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, params: Any, opt_state: Optional[Any],
           meta: Dict[str, Any]) -> None:
    """Start writing a checkpoint (asynchronously); `params`/`opt_state` are host arrays or
    device arrays, whole or sharded (each host writes the slices it holds).

    Without `opt_state` (converted weights) the checkpoint loads but cannot resume training.
    The meta records a checksum of every array, verified at restore. A step that is already
    saved is kept as it is (a rerun that passes a saved step again writes the same state: every
    write is idempotent).
    """
    if step in self._manager.all_steps():
      log.info('checkpoint step %d is already in %s; kept as it is', step, self.directory)
      if self.on_commit is not None:
        self.on_commit(step)
      return
    recorded = {'params': checksums.array_checksums(params)}
    items = {'params': ocp.args.StandardSave(params)}
    if opt_state is not None:
      recorded['opt_state'] = checksums.array_checksums(opt_state)
      items['opt_state'] = ocp.args.StandardSave(opt_state)
    items['meta'] = ocp.args.JsonSave(dict(meta, checksums=recorded,
                                           scanned_stages=block_scan.scanned_stages(params)))
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # pylint: disable=broad-except
      _quiet_closed_event_loop_reports()
      raise CheckpointError(f'could not write checkpoint step {step} to {self.directory}: '
                            f'{_cause(e)}') from e
    self._uncommitted.append(step)

  def _commit_finished(self, wait: bool = True) -> None:
    """Report the steps whose writes are done as committed (`wait`: wait for them first);
    raise CheckpointError naming the step whose write failed."""
    if not self._uncommitted:
      return
    try:
      if wait:
        self._manager.wait_until_finished()
      else:
        self._manager.check_for_errors()
        if self._manager.is_saving_in_progress():
          self._commit_listed()
          return
    except Exception as e:  # pylint: disable=broad-except  (whatever Orbax's writer raised)
      steps, self._uncommitted = self._uncommitted, []
      _quiet_closed_event_loop_reports()
      raise CheckpointError(f'could not write checkpoint step {steps[-1]} to {self.directory}: '
                            f'{_cause(e)}') from e
    steps, self._uncommitted = self._uncommitted, []
    for step in steps:
      if self.on_commit is not None:
        self.on_commit(step)

  def save_in_background(self, step: int, params: Any, opt_state: Optional[Any],
                         meta: Dict[str, Any]) -> None:
    """`save` run from the process's checkpoint-writer thread, so the caller goes on at once.

    The arrays must be the caller's own copies (e.g. `layout.device_copy`), not buffers the
    next step donates. One save runs at a time in the whole process (Orbax's cross-process
    signalling expects saves one after another, whichever manager makes them): a second waits
    for the first; its errors are raised by the next `save_in_background` or `wait`.
    """
    self._join_pending()
    self._pending = _writer().submit(self.save, step, params, opt_state, meta)

  def _commit_listed(self) -> None:
    """While a later save is in flight, report the earlier steps already on storage (read
    from the directory at most every COMMIT_LISTING_SECONDS: a listing of a bucket costs)."""
    now = time.monotonic()
    if now - self._listed_at < COMMIT_LISTING_SECONDS:
      return
    self._listed_at = now
    done = [s for s in self._uncommitted if self._finalized(s)]
    self._uncommitted = [s for s in self._uncommitted if s not in done]
    for step in done:
      if self.on_commit is not None:
        self.on_commit(step)

  def _finalized(self, step: int) -> bool:
    """Whether Orbax has committed `step`: locally it renames the finished step into place;
    on object stores, where renames are not atomic, it writes a marker last."""
    path = epath.Path(self.directory) / str(step)
    if '://' not in self.directory:
      return path.is_dir()
    return (path / 'commit_success.txt').exists()

  def poll(self) -> None:
    """Without waiting: raise the error of a save that has failed (naming its step), and
    report the steps whose writes have finished as committed. The loop calls it every step;
    it runs no collective, so it may overlap a background save's own."""
    if self._pending is not None:
      if not self._pending.done():
        return
      self._join_pending()
    self._commit_finished(wait=False)

  def _join_pending(self) -> None:
    pending, self._pending = self._pending, None
    if pending is not None:
      pending.result()

  def read_meta(self, step: int) -> Dict[str, Any]:
    """The JSON record of one step, without any arrays."""
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (Orbax raises many types)
      _quiet_closed_event_loop_reports()
      raise CheckpointError(f'checkpoint step {step} in {self.directory}: its meta record could '
                            f'not be read ({type(e).__name__}: {e}).') from e
    return dict(meta['meta'])

  def restore(self, step: int, abstract_params: Any, abstract_opt_state: Optional[Any] = None,
              check_meta: Optional[Callable[[Dict[str, Any]], None]] = None,
              shardings: Optional[Tuple[Any, Any]] = None) -> Tuple[Any, Any, Dict[str, Any]]:
    """Params, optimizer state (shaped like the abstract trees; None when not asked for) and
    meta of one step, verified against the recorded checksums.

    Without `shardings` the arrays come back as host arrays, whatever devices wrote them; with
    (params', opt_state's shardings) they are read straight into that placement (each host
    reads only its slices) and verified where they lie. `check_meta(meta)` runs before any
    array is read (e.g. to compare architectures); what it raises passes through.
    """
    meta = self.read_meta(step)
    if check_meta is not None:
      check_meta(meta)
    saved, wanted = meta.get('scanned_stages', {}), block_scan.scanned_stages(abstract_params)
    if saved == wanted:
      params, opt_state = self._read(step, meta, abstract_params, abstract_opt_state, shardings)
      return params, opt_state, meta
    # written in the other params layout (a run resumed with `scan_blocks` switched, or a tool
    # reading a stacked run): host arrays as written, verified, then relaid out; the caller
    # places them (`place_state`)
    as_saved = lambda tree: None if tree is None else jax.eval_shape(  # noqa: E731
        lambda t: block_scan.relayout(t, saved), tree)
    params, opt_state = self._read(step, meta, as_saved(abstract_params),
                                   as_saved(abstract_opt_state), None)
    log.info('checkpoint step %d: stacked stages %s read as %s', step, saved or 'none',
             wanted or 'per block')
    params = block_scan.relayout(params, wanted)
    opt_state = None if opt_state is None else block_scan.relayout(opt_state, wanted)
    for tree, abstract in ((params, abstract_params), (opt_state, abstract_opt_state)):
      if abstract is not None and jax.tree.structure(tree) != jax.tree.structure(abstract):
        raise CheckpointError(f'checkpoint step {step} in {self.directory}: its stacked stages '
                              f'{saved} do not convert to this model\'s '
                              f'{wanted or "per-block"} layout.')
    return params, opt_state, meta

  def _read(self, step: int, meta: Dict[str, Any], abstract_params: Any,
            abstract_opt_state: Optional[Any], shardings: Optional[Tuple[Any, Any]]):
    """(params, opt_state) of a step into the abstract trees' shapes, verified."""
    params_at, opt_state_at = shardings if shardings is not None else (None, None)
    items = {'params': ocp.args.StandardRestore(restore_target(abstract_params, params_at))}
    if abstract_opt_state is not None:
      items['opt_state'] = ocp.args.StandardRestore(restore_target(abstract_opt_state,
                                                                   opt_state_at))
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  (Orbax raises many types)
      _quiet_closed_event_loop_reports()
      raise CheckpointError(
          f'checkpoint step {step} in {self.directory} could not be read ({type(e).__name__}: '
          f'{e}). It may be truncated, incomplete or from another model.') from e
    arrays = {name: out[name] for name in items}
    if shardings is None:
      arrays = jax.tree.map(np.asarray, arrays)
    verify(arrays, meta, f'checkpoint step {step} in {self.directory}')
    return arrays['params'], arrays.get('opt_state')

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any,
                     check_meta: Optional[Callable[[Dict[str, Any]], None]] = None,
                     shardings: Optional[Tuple[Any, Any]] = None):
    """The newest readable checkpoint as (step, params, opt_state, meta); None if there is none.
    `shardings` as for `restore`.

    Unreadable newer steps are moved aside once an older one restores; when none restores,
    nothing is moved and CheckpointError says what was tried. Every process of a run calls it
    once, at start: they meet at a barrier so all see the steps as process 0 left them.
    """
    failures: List[Tuple[int, CheckpointError]] = []
    restored = None
    for step in reversed(self.steps()):
      try:
        restored = (step,) + self.restore(step, abstract_params, abstract_opt_state, check_meta,
                                          shardings)
        break
      except CheckpointError as e:
        log.error('%s', e)
        failures.append((step, e))
    if restored is not None:
      for bad, error in failures:
        self.set_aside(bad, error)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('mixmae_jax: checkpoints restored')
    if restored is not None and failures:
      self._manager.reload()
    if restored is None and failures:
      raise CheckpointError(f'no readable checkpoint in {self.directory} (tried steps '
                            f'{[s for s, _ in failures]}); refusing to start from scratch over '
                            f'them. Move them away to start afresh.')
    return restored

  def set_aside(self, step: int, error: Exception) -> Optional[str]:
    """Rename an unreadable step to `<step>.unreadable-<UTC time>` (process 0 only)."""
    if jax.process_index() != 0:
      return None
    source = epath.Path(self.directory) / str(step)
    target = source.parent / f'{step}.{SET_ASIDE}-{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}'
    source.rename(target)
    self._manager.reload()
    log.warning('moved the unreadable checkpoint step %d aside to %s (%s)', step, target,
                type(error.__cause__ or error).__name__)
    return str(target)

  def wait(self) -> None:
    """Until every save started has been written (raising what a background save raised)."""
    self._join_pending()
    self._commit_finished()

  def close(self) -> None:
    try:
      self._join_pending()
    finally:
      self._manager.close()


def finish(*managers: 'Checkpointer') -> None:
  """Wait for every save started, then close. While another error is on its way out (a lost
  lease, a non-finite step), a save's own failure is logged rather than raised over it: the
  cause the user must see is the first one."""
  propagating = sys.exc_info()[1] is not None
  for manager in managers:
    try:
      manager.wait()
    except CheckpointError as e:
      if not propagating:
        raise
      log.error('%s', e)
    finally:
      try:
        manager.close()
      except Exception as e:  # pylint: disable=broad-except
        if not propagating:
          raise
        log.error('closing %s: %s', manager.directory, e)


def verify(arrays: Dict[str, Any], meta: Dict[str, Any], what: str) -> None:
  """Raise CheckpointError naming what `checksums.problems` finds (damaged or non-finite
  arrays)."""
  problem = checksums.problems(arrays, meta)
  if problem:
    raise CheckpointError(f'{what}: {problem}')


def read_meta(directory: str, step: Optional[int] = None) -> Tuple[int, Dict[str, Any]]:
  """(step, meta) of a checkpoint directory's newest (or given) step, without any arrays."""
  ckpt = Checkpointer(directory, keep=None, create=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint found in {directory}.')
    return step, ckpt.read_meta(step)
  finally:
    ckpt.close()
