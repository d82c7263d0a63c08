"""The pretraining loop: plan, restore or initialize, step, log, save, draw.

Host work happens only at logging, checkpoint and picture steps; in between, steps are
dispatched asynchronously and batches wait on the devices. A resumed run reads the same data
(every host's stream position is in the checkpoint) and draws the same masks (keys derive from
seed and step), so it reproduces the uninterrupted run loss for loss.
"""
import logging
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mixmae_jax import checkpointing, config_checks, mixing, parallel, pixels
from mixmae_jax.architecture import arch_to_dict, mixmae_arch
from mixmae_jax.compute_options import options_from_config
from mixmae_jax.metric_logging import MetricLog, Progress
from mixmae_jax.objectives.mixmae import MixMAE
from mixmae_jax.optimizer import adamw, warmup_cosine_schedule
from mixmae_jax.reconstructions import save_reconstruction_png
from mixmae_jax.run_control import (RunPlan, StepMetrics, StopSignal, TrainingLog, all_hosts,
                                    batches_with_positions, plan_run, resume_position)
from mixmae_jax.train_step import TrainState, init_train_state, make_train_step

log = logging.getLogger(__name__)


def _init_or_restore(ckpt: checkpointing.Checkpointer, model, tx, config, plan: RunPlan):
  """(host state, data position of this host, step) from the newest checkpoint or fresh."""
  rng = jax.random.PRNGKey(config.seed)
  init = lambda: init_train_state(model, tx, rng, config.model.img_size)  # noqa: E731
  abstract = jax.eval_shape(init)
  restored = ckpt.restore_latest(abstract.params, abstract.opt_state)
  if restored is None:
    state = jax.jit(init)()
    return jax.device_get(state), 0, 0
  step, params, opt_state, meta = restored
  position = resume_position(meta, step, plan.per_host_batch)
  state = TrainState(step=np.asarray(step, np.int32), params=params, opt_state=opt_state)
  log.info('resumed from step %d (data position %d)', step, position)
  return state, position, step


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Pretrain MixMAE as `config` says, writing checkpoints, metrics and pictures to workdir."""
  from mixmae_jax import input_pipeline  # TensorFlow only here, not at import
  config_checks.validate(config, global_devices=jax.device_count(),
                         process_count=jax.process_count())
  arch = mixmae_arch(config.model)
  dtype = config_checks.resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  plan = plan_run(config, input_pipeline.dataset_size(config.data), jax.process_count())
  model = MixMAE(arch, dtype=dtype, options=options_from_config(config.model))
  schedule = warmup_cosine_schedule(plan.peak_lr, plan.warmup_steps, plan.total_steps,
                                    config.min_lr)
  tx = adamw(schedule, weight_decay=config.weight_decay, b1=config.adam_b1, b2=config.adam_b2,
             grad_clip_norm=config.grad_clip_norm)
  primary = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    keep=config.keep_checkpoints)
  host_state, position, start = _init_or_restore(ckpt, model, tx, config, plan)
  metric_log = MetricLog(workdir, enabled=primary)
  metric_log.truncate_after(start)
  data = input_pipeline.PretrainingInput(
      config.data, image_size=config.model.img_size, per_host_batch=plan.per_host_batch,
      seed=config.seed, host_index=jax.process_index(), host_count=jax.process_count(),
      start_position=position)
  log.info('%d steps (%d per epoch of %d images), warmup %d, peak lr %.3g, %d devices on %d '
           'hosts, compute %s, starting at step %d', plan.total_steps, plan.steps_per_epoch,
           plan.dataset_size, plan.warmup_steps, plan.peak_lr, jax.device_count(),
           jax.process_count(), jnp.dtype(dtype).name, start)
  meta = {'arch': arch_to_dict(arch), 'config': config.to_dict(),
          'dataset_size': plan.dataset_size, 'total_steps': plan.total_steps}
  loop = _Loop(config, workdir, plan, model, ckpt, metric_log, meta, primary)
  try:
    return loop.run(parallel.replicate(host_state), start, data,
                    make_train_step(model, tx, schedule, pixel_mean=config.data.mean,
                                    pixel_std=config.data.std,
                                    grad_accum_steps=config.grad_accum_steps))
  finally:
    ckpt.wait()
    ckpt.close()


class _Loop:
  """State of one run's loop: what was last checked, saved and seen."""

  def __init__(self, config, workdir, plan, model, ckpt, metric_log, meta, primary):
    self.c, self.workdir, self.plan, self.model = config, workdir, plan, model
    self.ckpt, self.metric_log, self.meta, self.primary = ckpt, metric_log, meta, primary
    self.training_log = TrainingLog(metric_log, config.batch_size, primary)
    self.metrics = StepMetrics(0)
    self.data_info = (0, 0)
    self.recon = _Reconstructor(config, model) if config.reconstruction_pairs else None

  def run(self, state, start: int, data, train_step) -> Dict[str, float]:
    c, plan = self.c, self.plan
    p_step = parallel.data_parallel(train_step)
    base_rng = parallel.replicate(jax.random.PRNGKey(c.seed))
    batches = parallel.prefetch(batches_with_positions(data), c.data.device_prefetch)
    stop = StopSignal()
    self.metrics = StepMetrics(start)
    last = {}
    progress = Progress(plan.total_steps, start)
    started = time.perf_counter()
    for step in range(start + 1, plan.total_steps + 1):
      batch, self.data_info = next(batches)
      state, metrics = p_step(state, batch, base_rng)
      self.metrics.add(step, metrics)
      if step == start + 1:
        jax.block_until_ready(state)
        log.info('first step (with compilation) took %.1f s', time.perf_counter() - started)
      if step % c.log_every_steps == 0 or step == plan.total_steps:
        last = self.log_metrics(step, progress, data)
      if step == start + 1:  # later rates leave compilation out
        progress = Progress(plan.total_steps, step)
      preempted = stop.reached(step)
      if step % c.checkpoint_every_steps == 0 or step == plan.total_steps or preempted:
        self.save(state, step)
      if self.recon and c.reconstruction_every_steps and step % c.reconstruction_every_steps == 0:
        self.recon.draw(state, step, self.workdir, self.primary)
      if preempted:
        log.warning('stopped at step %d on request; rerun the same command to resume', step)
        return last
    if self.recon:
      self.recon.draw(state, plan.total_steps, self.workdir, self.primary)
    return last

  def log_metrics(self, step: int, progress: Progress, data) -> Dict[str, float]:
    return self.training_log.write(step, self.metrics.take(), progress,
                                   self.data_info, data.examples_per_epoch)

  def save(self, state: TrainState, step: int) -> None:
    self.metrics.sync()  # never save after a non-finite step
    host = parallel.unreplicate(state)
    positions = all_hosts(list(self.data_info))
    meta = dict(self.meta, step=step, data_positions=[p[0] for p in positions],
                skipped_images=[p[1] for p in positions], process_count=jax.process_count(),
                saved_at=time.time())
    self.ckpt.save(step, host.params, host.opt_state, meta)


class _Reconstructor:
  """Draws the same images with the same mask at every picture step, so pictures compare."""

  def __init__(self, config, model: MixMAE):
    from mixmae_jax import input_pipeline  # TensorFlow only here, not at import
    self.c = config
    self.stride = model.config.encoder.stride
    count = 2 * config.reconstruction_pairs
    self.images = np.asarray(pixels.normalize(input_pipeline.reconstruction_images(
        config.data, config.model.img_size, count), config.data.mean, config.data.std))
    grid = config.model.img_size // model.config.encoder.stride
    self.mask = mixing.draw_mask(jax.random.PRNGKey(config.seed + 1), grid,
                                 config.model.mask_ratio)
    self._apply = jax.jit(lambda replica, images, mask: model.apply(
        {'params': jax.tree.map(lambda x: x[0], replica)}, images, mask=mask)['pred'])

  def draw(self, state: TrainState, step: int, workdir: str, primary: bool) -> Optional[str]:
    params = parallel.first_replica(state.params)
    pred = np.asarray(self._apply(params, jnp.asarray(self.images), self.mask))
    if not primary:
      return None
    directory = epath.Path(workdir) / 'reconstructions'
    directory.mkdir(parents=True, exist_ok=True)
    path = str(directory / f'step_{step:07d}.png')
    save_reconstruction_png(path, self.images, pred, np.asarray(self.mask),
                            self.stride, self.c.model.norm_pix_loss, self.c.data.mean,
                            self.c.data.std)
    return path

