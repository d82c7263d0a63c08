"""The loop skeleton every training task runs: restore or start, step, log, run hooks, save.

Pretraining and supervised training (fine-tuning, probing) differ only in their step, what their
checkpoints hold and their hooks (reconstruction pictures; evaluation with a best checkpoint).
Host work happens only at logging, hook and checkpoint steps; in between, steps are dispatched
asynchronously and batches wait on the devices. A resumed run reads the same data (every host's
stream position is in the checkpoint) and draws the same random numbers (keys derive from seed and
step), so it reproduces the uninterrupted run loss for loss. SIGTERM saves and stops at the next
step and ends the run with `Preempted`; a non-finite step stops the run before anything is saved.
A checkpoint made by another architecture is refused before any array is read
(`architecture_match`), and an unreadable newest checkpoint is set aside in favour of the
newest readable one (`checkpointing`).
"""
import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from mixmae_jax.training import architecture_match, checkpointing, parallel
from mixmae_jax.training.input_watch import StopRequested, WatchedInput
from mixmae_jax.training.metric_logging import MetricLog, Progress
from mixmae_jax.training.data_position import (DataInfo, all_hosts, batches_with_positions,
                                               data_meta, resume_position)
from mixmae_jax.training.run_control import RunPlan
from mixmae_jax.training.step_metrics import StepMetrics, TrainingLog
from mixmae_jax.training.stop_signal import Preempted, StopSignal
from mixmae_jax.training.train_step import TrainState

log = logging.getLogger(__name__)

Convert = Callable[[Any, Any], Tuple[Any, Any]]


def _identity(params, opt_state):
  return params, opt_state


def restore_or_init(ckpt: checkpointing.Checkpointer, init: Callable[..., TrainState],
                    plan: RunPlan, to_checkpoint: Convert = _identity,
                    from_checkpoint: Convert = _identity, init_args: Tuple = (),
                    arch: Optional[Dict[str, Any]] = None, ignore_fields: Sequence[str] = (),
                    layout=None) -> Tuple[TrainState, int, int, Optional[Dict[str, Any]]]:
  """(state, this host's data position, step, meta or None when fresh).

  `init(*init_args)` builds a fresh state (jitted; large inputs such as pretrained params go in
  `init_args` rather than a closure, so they are not compiled in as constants);
  `to_checkpoint`/`from_checkpoint` map between the state and what a checkpoint holds, and give
  the shapes to restore to without allocating anything. A fresh state comes back on the host; a
  restored one placed as `layout.restore_shardings` says (whole on one device by default), to
  be put in place with `layout.place_state`. `arch` (an architecture record) is compared with
  each checkpoint's before its arrays are read, `ignore_fields` left out.
  """
  abstract = jax.eval_shape(init, *init_args)
  saved = jax.eval_shape(to_checkpoint, abstract.params, abstract.opt_state)
  shardings = None if layout is None else layout.restore_shardings(*saved)
  check = None if arch is None else architecture_match.meta_check(arch, ignore_fields)
  restored = ckpt.restore_latest(*saved, check_meta=check, shardings=shardings)
  steps = all_hosts([-1 if restored is None else restored[0]])
  if len({s[0] for s in steps}) > 1:
    raise checkpointing.CheckpointError(
        f'the hosts restored different steps of {ckpt.directory} ({[s[0] for s in steps]}): '
        f'do they all see the same files?')
  if restored is None:
    return jax.device_get(jax.jit(init)(*init_args)), 0, 0, None
  step, params, opt_state, meta = restored
  params, opt_state = from_checkpoint(params, opt_state)
  position = resume_position(meta, step, plan.per_host_batch)
  log.info('resumed from step %d (data position %d)', step, position)
  state = TrainState(step=np.asarray(step, np.int32), params=params, opt_state=opt_state)
  return state, position, step, meta


class Hook:
  """Work a loop does at some steps besides training (pictures, evaluation).

  `due(step, last)` says when; calling it returns scalars for the run's result.
  """

  def due(self, step: int, last: bool) -> bool:
    raise NotImplementedError

  def __call__(self, loop: 'TrainingLoop', state: TrainState, step: int) -> Dict[str, float]:
    raise NotImplementedError

  def done(self, loop: 'TrainingLoop', step: int, recorded: Dict[str, Any]) -> bool:
    """Whether a run that stopped after training `step` already did this hook's work there
    (`recorded`: the metrics logged at that step); otherwise a rerun does it."""
    del loop, step, recorded
    return True


class Profile:
  """A trace of steps `profile_steps` = (first, last) (inclusive; (0, 0) = none) for
  TensorBoard's profiler, written under WORKDIR/tensorboard."""

  def __init__(self, config, workdir: str):
    self.first, self.last = tuple(config.get('profile_steps', (0, 0)))
    self.directory = os.path.join(workdir, 'tensorboard')
    self.active = False

  def before(self, step: int) -> None:
    if self.first and step == self.first and jax.process_index() == 0:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, state: Any) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      log.info('profile of steps %d-%d written under %s', self.first, self.last, self.directory)


class TrainingLoop:
  """One run's loop and what it has last checked, saved and seen."""

  def __init__(self, config, workdir: str, plan: RunPlan, ckpt: checkpointing.Checkpointer,
               meta: Dict[str, Any], to_checkpoint: Convert = _identity, claim=None,
               layout=None):
    self.c, self.workdir, self.plan, self.ckpt = config, workdir, plan, ckpt
    self.meta, self.to_checkpoint, self.claim = meta, to_checkpoint, claim
    self.layout = parallel.ReplicatedLayout() if layout is None else layout
    self.primary = jax.process_index() == 0
    self.metric_log = MetricLog(workdir, enabled=self.primary)
    self.training_log = TrainingLog(self.metric_log, config.batch_size, self.primary)
    self.metrics = StepMetrics(0)
    self.data_info = DataInfo()
    self.last_saved = -1
    self.other_checkpointers = []  # e.g. fine-tuning's best: their failed saves stop the run too
    if claim is not None:
      claim.total_steps = plan.total_steps
      ckpt.on_commit = claim.committed  # status.json names only steps on storage
      self.metric_log.guard = claim.require

  def _poll_saves(self) -> None:
    """A failed save stops the run at once (as a lost lease when another run took the workdir
    over meanwhile: that run's start removed the save's unfinished files); finished saves are
    committed."""
    try:
      for manager in [self.ckpt] + self.other_checkpointers:
        manager.poll()
    except checkpointing.CheckpointError:
      self._require_lease()
      raise

  def _require_lease(self) -> None:
    """Stop (LeaseLost) before writing anything if another run took the workdir over."""
    if self.claim is not None:
      self.claim.require()

  def _watched(self, data, stop: StopSignal) -> WatchedInput:
    """The host stream read on its own thread, so waiting for it still honours SIGTERM and
    ends with an error when the source stalls or its files are gone."""
    return WatchedInput(batches_with_positions(data), getattr(data, 'source_name', 'the input'),
                        float(self.c.data.get('stall_seconds', 900.0)),
                        stop_requested=lambda: stop.received,
                        problem=getattr(data, 'problem', lambda: None))

  def run(self, state: TrainState, start: int, data, train_step: Callable,
          hooks: Sequence[Hook] = (), stop: Optional[StopSignal] = None) -> Dict[str, float]:
    """Train from step `start` to the plan's end (or a preemption); returns the last logged
    scalars and the hooks' last results. `stop`: the run's SIGTERM handling, installed before
    its start-up work (a new one by default)."""
    c, total = self.c, self.plan.total_steps
    stop = StopSignal(during_startup=False) if stop is None else stop
    stop.steps_begin()
    if self.claim is not None:
      self.claim.step = start if start else None
      self.claim.start()  # the checks passed: config.json and `running`
    self.metric_log.truncate_after(start)
    if start >= total:
      return self._trained_already(state, total, hooks)
    watched = self._watched(data, stop)
    batches = parallel.prefetch(watched, c.data.device_prefetch, self.layout.place_batch)
    try:
      return self._steps(state, start, data, batches, train_step, hooks, stop)
    finally:  # however the loop ends: no reader thread left holding the pipeline
      batches.close()
      watched.close()

  def _steps(self, state: TrainState, start: int, data, batches, train_step: Callable,
             hooks: Sequence[Hook], stop: StopSignal) -> Dict[str, float]:
    """The steps after `start` to the plan's end, from the device-prefetched `batches`."""
    c, total = self.c, self.plan.total_steps
    p_step = self.layout.wrap(train_step)
    base_rng = self.layout.place_rng(jax.random.PRNGKey(c.seed))
    progress = Progress(total, start)
    profile = Profile(c, self.workdir)
    self.metrics = StepMetrics(start)
    results: Dict[str, float] = {}
    started = waited = time.perf_counter()
    data_wait, waited_steps = 0.0, 0
    for step in range(start + 1, total + 1):
      self._poll_saves()
      profile.before(step)
      waited = time.perf_counter()
      try:
        batch, self.data_info = next(batches)
      except StopRequested:
        self._stop_while_waiting(state, step - 1, start)
      data_wait, waited_steps = data_wait + time.perf_counter() - waited, waited_steps + 1
      state, metrics = p_step(state, batch, base_rng)
      self.metrics.add(step, metrics)
      if step == start + 1:
        jax.block_until_ready(state)
        log.info('first step (with compilation) took %.1f s', time.perf_counter() - started)
      last = step == total
      preempted = stop.reached(step)
      saving = step % c.checkpoint_every_steps == 0 or last or preempted
      logging_now = step % c.log_every_steps == 0 or last
      if any(hook.due(step, last) for hook in hooks):
        self._require_lease()  # log lines and saves check for themselves, right before writing
      if logging_now:
        results.update(self.training_log.write(step, self.metrics.take(), progress,
                                               self.data_info, data.examples_per_epoch,
                                               data_wait / waited_steps))
        data_wait, waited_steps = 0.0, 0
      profile.after(step, state)
      if step == start + 1:  # later rates leave compilation out
        progress = Progress(total, step)
      for hook in hooks:
        if hook.due(step, last):
          results.update(hook(self, state, step))
      if saving:
        self.save(self.ckpt, state, step)
      if preempted:
        self._preempted(step)
    self.metric_log.flush()
    return results

  def _trained_already(self, state: TrainState, step: int,
                       hooks: Sequence[Hook]) -> Dict[str, float]:
    """A rerun of a run whose steps are all trained: what it logged at the last step, and the
    final hooks' work (an evaluation, pictures) where the run stopped before doing it."""
    recorded: Dict[str, Any] = {}
    for record in self.metric_log.records_at(step):
      recorded.update({k: v for k, v in record.items() if k != 'step'})
    for hook in hooks:
      if hook.due(step, True) and not hook.done(self, step, recorded):
        self._require_lease()
        recorded.update(hook(self, state, step))
    for manager in [self.ckpt] + self.other_checkpointers:
      manager.wait()
    log.warning('all %d steps of this run are trained (checkpoint step %d in %s): nothing more '
                'to do. Use another --workdir to train again.', step, step, self.ckpt.directory)
    return recorded

  def _preempted(self, step: int) -> None:
    self.ckpt.wait()
    self.metric_log.flush()
    log.warning('stopped at step %d on request, after saving it; rerun the same command to '
                'resume', step)
    raise Preempted(step)

  def _stop_while_waiting(self, state: TrainState, step: int, start: int) -> None:
    """SIGTERM while waiting for the batch of step + 1: save `step` (unless it is saved or is
    where the run started) and stop."""
    if step > start and self.last_saved != step:
      self._require_lease()
      self.save(self.ckpt, state, step)
    self._preempted(step)

  def save(self, manager: checkpointing.Checkpointer, state: TrainState, step: int,
           with_opt_state: bool = True) -> None:
    """Checkpoint `state` (as the layout holds it) at `step` with every host's data position."""
    self._require_lease()
    self.metrics.sync()  # never save after a non-finite step
    background = self.c.get('save_in_background', True)
    tree = (state.params, state.opt_state) if with_opt_state else state.params
    copied = self.layout.device_copy(tree) if background else self.layout.for_saving(tree)
    params, opt_state = (copied if with_opt_state else (copied, None))
    params, opt_state = self.to_checkpoint(params, opt_state)
    if not with_opt_state:  # e.g. a best checkpoint: for loading, not resuming
      opt_state = {'step': np.asarray(step, np.int64)}
    meta = dict(self.meta, step=step, process_count=jax.process_count(), saved_at=time.time(),
                **data_meta(all_hosts(self.data_info.as_ints())))
    (manager.save_in_background if background else manager.save)(step, params, opt_state, meta)
    if manager is self.ckpt:
      self.last_saved = step
      self.metric_log.flush()  # what a resume keeps is on storage with its checkpoint
