"""Pretraining: build the objective a config names, then run the loop with reconstruction pictures.

Nothing here knows a particular objective: the config's `model.objective.name` picks the module
(`objectives/`), which gives the model, its weight-decay exemptions, random streams, batch rule
and picture columns.
"""
import dataclasses
import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from mixmae_jax import architectures
from mixmae_jax.data import pixels
from mixmae_jax.networks.compute_options import ComputeOptions, options_from_config
from mixmae_jax.training import checkpointing, config_checks, parallel
from mixmae_jax.training import workdir as run_workdir
from mixmae_jax.training.loop import Hook, TrainingLoop, restore_or_init
from mixmae_jax.training.optimizer import adamw, learning_rate_schedule
from mixmae_jax.training.pictures import Pictures, picture_count, picture_path
from mixmae_jax.training.data_position import resume_skips
from mixmae_jax.training.run_control import plan_run, use_compilation_cache
from mixmae_jax.training.stop_signal import StopSignal
from mixmae_jax.training.train_step import TrainState, init_train_state, make_train_step

log = logging.getLogger(__name__)


class PictureHook(Hook):
  """Reconstruction pictures every `reconstruction_every_steps` steps and at the end."""

  def __init__(self, config, pictures: Pictures):
    self.every, self.pictures = config.reconstruction_every_steps, pictures

  def due(self, step: int, last: bool) -> bool:
    return last or bool(self.every and step % self.every == 0)

  def done(self, loop: TrainingLoop, step: int, recorded: Dict[str, Any]) -> bool:
    return os.path.exists(picture_path(loop.workdir, step))

  def __call__(self, loop: TrainingLoop, state, step: int) -> Dict[str, float]:
    self.pictures.draw(loop.layout.single_copy(state.params), step, loop.workdir, loop.primary,
                       loop.metric_log)
    return {}


def make_pictures(config, model, objective, arch) -> Pictures:
  from mixmae_jax.data import pretraining as data  # TensorFlow only here, not at import
  count = picture_count(config.reconstruction_images, objective.batch_multiple(arch)[0])
  images = data.reconstruction_images(config.data, arch.encoder.img_size, count)
  return Pictures(model, objective, arch, pixels.normalize(images, config.data.mean,
                                                           config.data.std),
                  config.seed, config.data.mean, config.data.std)


@dataclasses.dataclass(frozen=True)
class StepSetup:
  """What a pretraining run (or the benchmark) steps with, built once from the config."""
  tx: optax.GradientTransformation
  layout: Any  # parallel.ReplicatedLayout or ShardedLayout
  init: Callable[[], TrainState]  # fresh state (jittable)
  abstract_state: TrainState
  train_step: Callable  # the per-device step, for `layout.wrap`


def training_options(config) -> ComputeOptions:
  """How pretraining computes: the config's `model` fields; scanned stages keep their params
  stacked in the state (block_scan.py), so the step neither stacks nor splits them, unless
  `model.stacked_params` is False."""
  return options_from_config(config.model, stacked=config.model.get('stacked_params', True))


def step_setup(config, objective, arch, model, schedule,
               devices: Optional[Sequence] = None) -> StepSetup:
  """The optimizer, the state's layout (`config.state_sharding`) over `devices` (default all),
  the initializer and the per-device step of a pretraining config."""
  def make_tx(norm=optax.tree.norm):
    return adamw(schedule, weight_decay=config.weight_decay, b1=config.adam_b1,
                 b2=config.adam_b2, grad_clip_norm=config.grad_clip_norm,
                 no_decay_names=objective.NO_WEIGHT_DECAY, global_norm=norm)

  def init_with(tx):
    return lambda: init_train_state(model, tx, jax.random.PRNGKey(config.seed),
                                    arch.encoder.img_size, architectures.init_batch_size(arch),
                                    streams=objective.RNG_STREAMS)

  abstract = jax.eval_shape(init_with(make_tx()))
  layout = parallel.layout_for(config.get('state_sharding', 'replicated'), abstract, devices)
  tx = make_tx(layout.collectives.norm)  # the same state as make_tx(): only the norm differs
  step = make_train_step(model, tx, schedule, pixel_mean=config.data.mean,
                         pixel_std=config.data.std, grad_accum_steps=config.grad_accum_steps,
                         rng_streams=objective.RNG_STREAMS, collectives=layout.collectives)
  return StepSetup(tx, layout, init_with(tx), abstract, step)


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Pretrain as `config` says, writing checkpoints, metrics and pictures to `workdir`.

  Holds the workdir (`workdir.claim`: a lease, status.json, config.json) while it runs; raises
  `Preempted` when SIGTERM stopped it after a checkpoint.
  """
  config_checks.validate(config, global_devices=jax.device_count(),
                         process_count=jax.process_count())
  with StopSignal() as stop, run_workdir.claim(workdir, config) as claim:
    return _pretrain(config, workdir, claim, stop)


def _pretrain(config, workdir: str, claim, stop: StopSignal) -> Dict[str, float]:
  from mixmae_jax.data import pretraining as data  # TensorFlow only here, not at import
  use_compilation_cache(config.get('compilation_cache_dir', 'auto'), workdir)
  objective, arch = config_checks.pretraining_arch(config)
  dtype = config_checks.resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  plan = plan_run(config, data.dataset_size(config.data), jax.process_count())
  model = architectures.build_model(arch, dtype, training_options(config))
  schedule = learning_rate_schedule(config, plan)
  setup = step_setup(config, objective, arch, model, schedule)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    keep=config.keep_checkpoints)
  state, position, start, restored = restore_or_init(ckpt, setup.init, plan,
                                                     arch=architectures.to_dict(arch),
                                                     layout=setup.layout)
  skipped, skipped_ids = resume_skips(restored)
  data_stream = data.PretrainingInput(
      config.data, image_size=arch.encoder.img_size, per_host_batch=plan.per_host_batch,
      seed=config.seed, host_index=jax.process_index(), host_count=jax.process_count(),
      start_position=position, skipped_before=skipped, known_skipped_ids=skipped_ids)
  log.info('%s on %s: %d steps (%d per epoch of %d images), warmup %d, peak lr %.3g, %d devices '
           'on %d hosts, compute %s, %s state, starting at step %d', arch.objective,
           arch.encoder.name, plan.total_steps, plan.steps_per_epoch, plan.dataset_size,
           plan.warmup_steps, plan.peak_lr, jax.device_count(), jax.process_count(),
           jnp.dtype(dtype).name, setup.layout.name, start)
  meta = {'arch': architectures.to_dict(arch), 'config': config.to_dict(),
          'dataset_size': plan.dataset_size, 'total_steps': plan.total_steps}
  hooks = []
  if config.reconstruction_images:
    hooks.append(PictureHook(config, make_pictures(config, model, objective, arch)))
  loop = TrainingLoop(config, workdir, plan, ckpt, meta, layout=setup.layout, claim=claim)
  try:
    with data_stream:
      return loop.run(setup.layout.place_state(state), start, data_stream, setup.train_step,
                      hooks, stop)
  finally:
    checkpointing.finish(ckpt)

