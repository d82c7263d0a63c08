"""The supervised loop of fine-tuning and linear probing: plan, restore or start, step, evaluate.

It runs like the pretraining loop (`train_loop.py`): host work only at logging, evaluation and
checkpoint steps, exact resume (data positions in the checkpoint, keys from seed and step),
SIGTERM saves and exits, non-finite losses stop the run before anything is saved. On top:
evaluation (top-1, top-5, loss) every epoch and at the end, and two checkpoint directories:
WORKDIR/checkpoints (the last ones, to resume) and WORKDIR/best/checkpoints (the best top-1 so
far); both load with `mixmae_jax.load`.

What differs between the two tasks is a `Task`: fine-tuning optimizes every parameter with
layer-decayed AdamW; a probe optimizes a head on standardized frozen features (`linear_probe.py`).
"""
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixmae_jax import checkpointing, finetune_checks, linear_probe, parallel, pretrained
from mixmae_jax.architecture import ClassifierConfig, arch_from_dict, arch_to_dict
from mixmae_jax.classification_step import DeviceAugment, make_classification_step
from mixmae_jax.classifier import SwinClassifier
from mixmae_jax.compute_options import options_from_config
from mixmae_jax.config_checks import resolve_compute_dtype
from mixmae_jax.evaluation import evaluate, make_eval_step
from mixmae_jax.layer_decay import layer_decayed_adamw
from mixmae_jax.metric_logging import MetricLog, Progress
from mixmae_jax.mixup import MixupSettings
from mixmae_jax.optimizer import warmup_cosine_schedule
from mixmae_jax.run_control import (RunPlan, StepMetrics, StopSignal, TrainingLog, all_hosts,
                                    batches_with_positions, plan_run, resume_position)
from mixmae_jax.train_step import TrainState
from mixmae_jax.weight_ema import ema_params, track_ema

log = logging.getLogger(__name__)

BEST_DIR = 'best'
HEAD_STDDEV = {'finetune': 2e-5, 'linear_probe': 0.01}


@dataclasses.dataclass(frozen=True)
class Task:
  """How one supervised task builds, trains and saves its params."""
  model: SwinClassifier
  logits_fn: Callable
  tx: optax.GradientTransformation
  trainable: Optional[str]  # the optimized entry of params; None: all
  init_params: Callable[[jax.Array, Optional[Dict[str, Any]]], Any]  # (rng, encoder) -> params
  to_checkpoint: Callable[[Any, Any], Tuple[Any, Any]] = lambda p, o: (p, o)
  from_checkpoint: Callable[[Any, Any], Tuple[Any, Any]] = lambda p, o: (p, o)


def classifier_init_fn(model: SwinClassifier, head_stddev: float) -> Callable:
  def init(rng, encoder):
    init_rng, head_rng = jax.random.split(rng)
    size = model.config.encoder.img_size
    params = dict(model.init(init_rng, jnp.zeros((2, size, size, 3)))['params'])
    if encoder is not None:
      pretrained.check_matches(encoder, params)
      params.update(encoder)
    params['head'] = pretrained.new_head(head_rng, model.config.encoder.num_features,
                                         model.config.num_classes, head_stddev)
    return params
  return init


def build_task(config, arch: ClassifierConfig, dtype, schedule) -> Task:
  """The fine-tuning or linear-probe Task of `config.task`."""
  model = SwinClassifier(arch, dtype=dtype, options=options_from_config(config.model))
  classifier_init = classifier_init_fn(model, HEAD_STDDEV[config.task])
  if config.task == 'finetune':
    def logits_fn(params, images, train, rngs):
      return model.apply({'params': params}, images, train, rngs=rngs)

    abstract = jax.eval_shape(classifier_init, jax.random.PRNGKey(0), None)
    tx = layer_decayed_adamw(schedule, abstract, arch.encoder.depths,
                             layer_decay=config.layer_decay, weight_decay=config.weight_decay,
                             b1=config.adam_b1, b2=config.adam_b2,
                             grad_clip_norm=config.grad_clip_norm)
    if config.ema_decay > 0:
      tx = optax.chain(tx, track_ema(config.ema_decay))
    return Task(model, logits_fn, tx, None, classifier_init)

  def probe_init(rng, encoder):
    # The encoder is drawn as fine-tuning and k-NN draw it: one random baseline for all three.
    features = arch.encoder.num_features
    return {'encoder': classifier_init(rng, encoder),
            'head': pretrained.new_head(jax.random.fold_in(rng, 1), features, arch.num_classes,
                                        HEAD_STDDEV['linear_probe']),
            'feature_mean': jnp.zeros((features,)), 'feature_std': jnp.ones((features,))}

  tx = linear_probe.probe_optimizer(config.probe.optimizer, schedule,
                                    momentum=config.probe.momentum,
                                    weight_decay=config.weight_decay)
  return Task(model, linear_probe.probe_logits_fn(model), tx, 'head', probe_init,
              linear_probe.to_checkpoint, linear_probe.from_checkpoint)


def pretrained_arch(config, num_classes: int
                    ) -> Tuple[ClassifierConfig, Optional[Dict[str, Any]]]:
  """(architecture, encoder params or None) from the model fields and `config.pretrained`."""
  drop_path = config.model.drop_path_rate if config.task == 'finetune' else 0.0
  arch = finetune_checks.classifier_arch(config.model, num_classes)
  arch = dataclasses.replace(arch, encoder=dataclasses.replace(arch.encoder,
                                                               drop_path_rate=drop_path))
  if not config.pretrained:
    log.warning('config.pretrained is empty: starting from a randomly initialized encoder')
    return arch, None
  encoder_params, encoder = pretrained.load_encoder(config.pretrained, arch.encoder)
  return dataclasses.replace(arch, encoder=encoder), encoder_params


def resolve_arch(config, num_classes: int, ckpt: checkpointing.Checkpointer
                 ) -> Tuple[ClassifierConfig, Optional[Dict[str, Any]]]:
  """Like `pretrained_arch`, but a resumed run takes the architecture its checkpoint recorded
  and needs no pretrained file."""
  if ckpt.latest_step() is not None:
    _, meta = checkpointing.read_meta(ckpt.directory)
    return arch_from_dict(meta['arch']), None
  return pretrained_arch(config, num_classes)


def _init_or_restore(task: Task, ckpt, config, plan: RunPlan, encoder, feature_batches):
  """(host state, data position, step, best top-1) from the newest checkpoint or fresh."""
  rng = jax.random.PRNGKey(config.seed)

  def fresh(encoder_params):
    params = task.init_params(rng, encoder_params)
    optimized = params if task.trainable is None else params[task.trainable]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=task.tx.init(optimized))

  abstract = jax.eval_shape(fresh, encoder)
  saved = jax.eval_shape(task.to_checkpoint, abstract.params, abstract.opt_state)
  restored = ckpt.restore_latest(*saved)
  if restored is None:
    state = jax.device_get(jax.jit(fresh)(encoder))
    if task.trainable is not None:  # a probe: standardize with the data's feature statistics
      state = state.replace(params=feature_batches(state.params))
    return state, 0, 0, 0.0
  step, params, opt_state, meta = restored
  params, opt_state = task.from_checkpoint(params, opt_state)
  position = resume_position(meta, step, plan.per_host_batch)
  state = TrainState(step=np.asarray(step, np.int32), params=params, opt_state=opt_state)
  log.info('resumed from step %d (data position %d)', step, position)
  return state, position, step, float(meta.get('best_top1', 0.0))


def open_task(config):
  """Validate `config`; return (compute dtype, train source, eval source, number of classes)."""
  from mixmae_jax import labelled_input  # TensorFlow only here, not at import
  finetune_checks.validate(config, global_devices=jax.device_count(),
                           process_count=jax.process_count())
  dtype = resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  train_source = labelled_input.open_labelled(config.data, train=True)
  eval_source = labelled_input.open_labelled(config.data, train=False,
                                             class_names=train_source.class_names)
  return dtype, train_source, eval_source, config.model.num_classes or train_source.num_classes


def finetune_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Fine-tune or linear-probe as `config` says; returns the final evaluation."""
  from mixmae_jax import labelled_input  # TensorFlow only here, not at import
  dtype, train_source, eval_source, num_classes = open_task(config)
  plan = plan_run(config, train_source.size, jax.process_count())
  schedule = warmup_cosine_schedule(plan.peak_lr, plan.warmup_steps, plan.total_steps,
                                    config.min_lr)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    keep=config.keep_checkpoints)
  best = checkpointing.Checkpointer(checkpointing.checkpoint_dir(os.path.join(workdir, BEST_DIR)),
                                    keep=1)
  arch, encoder = resolve_arch(config, num_classes, ckpt)
  task = build_task(config, arch, dtype, schedule)
  data_kwargs = dict(image_size=arch.encoder.img_size, seed=config.seed,
                     host_index=jax.process_index(), host_count=jax.process_count())

  def feature_batches(params):
    per_host = config.eval_batch_size // jax.process_count()
    data = labelled_input.LabelledTrainInput(config.data, config.augment,
                                             per_host_batch=per_host, **data_kwargs)
    count = -(-config.probe.norm_examples // config.eval_batch_size)
    step = parallel.data_parallel(linear_probe.make_feature_moments_step(
        task.model, pixel_mean=config.data.mean, pixel_std=config.data.std), donate_state=False)
    mean, std = linear_probe.feature_statistics(
        step, parallel.replicate(params['encoder']), (next(data) for _ in range(count)))
    return dict(params, feature_mean=mean, feature_std=std)

  host_state, position, start, best_top1 = _init_or_restore(task, ckpt, config, plan, encoder,
                                                            feature_batches)
  data = labelled_input.LabelledTrainInput(
      config.data, config.augment, per_host_batch=plan.per_host_batch, start_position=position,
      **data_kwargs)
  evaluator = _Evaluator(config, task, eval_source, arch.encoder.img_size)
  meta = {'arch': arch_to_dict(arch), 'config': config.to_dict(), 'task': config.task,
          'dataset_size': plan.dataset_size, 'total_steps': plan.total_steps,
          'class_names': list(train_source.class_names)}
  log.info('%s: %d steps (%d per epoch of %d images), warmup %d, peak lr %.3g, %d classes, %d '
           'devices on %d hosts, starting at step %d', config.task, plan.total_steps,
           plan.steps_per_epoch, plan.dataset_size, plan.warmup_steps, plan.peak_lr, num_classes,
           jax.device_count(), jax.process_count(), start)
  step_fn = make_classification_step(
      task.logits_fn, task.tx, schedule, num_classes=num_classes, pixel_mean=config.data.mean,
      pixel_std=config.data.std, augment=device_augment(config),
      grad_accum_steps=config.grad_accum_steps, trainable=task.trainable)
  loop = _Loop(config, workdir, plan, task, (ckpt, best), evaluator, meta, best_top1)
  try:
    return loop.run(parallel.replicate(host_state), start, data, step_fn)
  finally:
    for manager in (ckpt, best):
      manager.wait()
      manager.close()


def device_augment(config) -> DeviceAugment:
  a = config.augment
  settings = MixupSettings(mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha,
                           prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                           label_smoothing=a.label_smoothing)
  return DeviceAugment(mixup=settings, erase_prob=a.erase_prob)


class _Evaluator:
  """Top-1/top-5/loss of the current params (and of their EMA, when one is kept)."""

  def __init__(self, config, task: Task, source, image_size: int):
    self.c, self.source, self.image_size = config, source, image_size
    self.p_eval = parallel.data_parallel(make_eval_step(
        task.logits_fn, pixel_mean=config.data.mean, pixel_std=config.data.std),
        donate_state=False)

  def batches(self):
    from mixmae_jax import labelled_input  # pylint: disable=import-outside-toplevel
    return labelled_input.eval_batches(
        self.source, image_size=self.image_size, crop_pct=self.c.data.eval_crop_pct,
        per_host_batch=self.c.eval_batch_size // jax.process_count(),
        host_index=jax.process_index(), host_count=jax.process_count())

  def __call__(self, state: TrainState) -> Dict[str, float]:
    out = {f'eval_{k}': v for k, v in evaluate(self.p_eval, state.params, self.batches()).items()}
    ema = ema_params(state.opt_state)
    if ema is not None:
      scores = evaluate(self.p_eval, ema, self.batches())
      out.update({f'eval_ema_{k}': scores[k] for k in ('top1', 'top5', 'loss')})
    return out


class _Loop:
  """State of one run's loop: what was last checked, saved, seen and the best so far."""

  def __init__(self, config, workdir, plan, task, checkpointers, evaluator, meta, best_top1):
    self.c, self.workdir, self.plan, self.task = config, workdir, plan, task
    self.ckpt, self.best = checkpointers
    self.evaluator, self.meta, self.best_top1 = evaluator, meta, best_top1
    self.primary = jax.process_index() == 0
    self.metric_log = MetricLog(workdir, enabled=self.primary)
    self.training_log = TrainingLog(self.metric_log, config.batch_size, self.primary)
    self.metrics = StepMetrics(0)
    self.data_info = (0, 0)
    self.eval_every = (config.eval_every_steps if config.eval_every_steps > 0 else
                       plan.steps_per_epoch)

  def run(self, state, start: int, data, train_step) -> Dict[str, float]:
    c, plan = self.c, self.plan
    self.metric_log.truncate_after(start)
    p_step = parallel.data_parallel(train_step)
    base_rng = parallel.replicate(jax.random.PRNGKey(c.seed))
    batches = parallel.prefetch(batches_with_positions(data), c.data.device_prefetch)
    stop, progress = StopSignal(), Progress(plan.total_steps, start)
    self.metrics = StepMetrics(start)
    scores: Dict[str, float] = {}
    for step in range(start + 1, plan.total_steps + 1):
      batch, self.data_info = next(batches)
      state, metrics = p_step(state, batch, base_rng)
      self.metrics.add(step, metrics)
      if step % c.log_every_steps == 0 or step == plan.total_steps:
        self.log_metrics(step, progress, data)
      if step == start + 1:  # later rates leave compilation out
        progress = Progress(plan.total_steps, step)
      if step % self.eval_every == 0 or step == plan.total_steps:
        scores = self.evaluate(state, step)
      preempted = stop.reached(step)
      if step % c.checkpoint_every_steps == 0 or step == plan.total_steps or preempted:
        self.save(self.ckpt, state, step)
      if preempted:
        log.warning('stopped at step %d on request; rerun the same command to resume', step)
        break
    return scores

  def log_metrics(self, step: int, progress: Progress, data) -> None:
    self.training_log.write(step, self.metrics.take(), progress, self.data_info,
                            data.examples_per_epoch)

  def evaluate(self, state: TrainState, step: int) -> Dict[str, float]:
    self.metrics.sync()  # a non-finite step is reported, not evaluated
    started = time.perf_counter()
    scores = self.evaluator(state)
    if scores['eval_top1'] > self.best_top1:
      self.best_top1 = scores['eval_top1']
      self.save(self.best, state, step, with_opt_state=False)
    scores['best_top1'] = self.best_top1
    if self.primary:
      print(f'eval step {step}: top-1 {scores["eval_top1"]:.2f} top-5 {scores["eval_top5"]:.2f} '
            f'loss {scores["eval_loss"]:.4f} (best top-1 {self.best_top1:.2f}; '
            f'{time.perf_counter() - started:.1f} s)', flush=True)
    self.metric_log.write(step, scores)
    return scores

  def save(self, manager, state: TrainState, step: int, with_opt_state: bool = True) -> None:
    self.metrics.sync()  # never save after a non-finite step
    host = parallel.unreplicate(state)
    params, opt_state = self.task.to_checkpoint(host.params, host.opt_state)
    if not with_opt_state:  # the best checkpoint is for loading, not resuming
      opt_state = {'step': np.asarray(step, np.int64)}
    positions = all_hosts(list(self.data_info))
    meta = dict(self.meta, step=step, data_positions=[p[0] for p in positions],
                skipped_images=[p[1] for p in positions], process_count=jax.process_count(),
                best_top1=self.best_top1, saved_at=time.time())
    manager.save(step, params, opt_state, meta)
