"""Supervised training of a pretrained encoder: fine-tuning and linear probing, with evaluation.

It runs the loop skeleton of pretraining (`training/loop.py`: exact resume, SIGTERM saves and
exits, non-finite losses stop the run before anything is saved) with an evaluation hook: top-1,
top-5 and loss every epoch and at the end, and two checkpoint directories, WORKDIR/checkpoints
(the last ones, to resume) and WORKDIR/best/checkpoints (the best top-1 so far); both load with
`mixmae_jax.load`.

What differs between the two tasks is a `Task`: fine-tuning optimizes every parameter with
layer-decayed AdamW; a probe optimizes a head on standardized frozen features (`linear_probe.py`).
"""
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mixmae_jax import architectures
from mixmae_jax.data import DataError
from mixmae_jax.evaluation import finetune_checks, linear_probe, pretrained
from mixmae_jax.evaluation.accuracy import evaluate, make_eval_step
from mixmae_jax.evaluation.classification_step import DeviceAugment, make_classification_step
from mixmae_jax.evaluation.layer_decay import layer_decayed_adamw
from mixmae_jax.evaluation.mixup import MixupSettings
from mixmae_jax.evaluation.weight_ema import ema_params, track_ema
from mixmae_jax.networks.classifier import Classifier, ClassifierConfig
from mixmae_jax.networks.compute_options import options_from_config
from mixmae_jax.training import architecture_match, checkpointing, parallel
from mixmae_jax.training import workdir as run_workdir
from mixmae_jax.training.config_checks import ConfigError, resolve_compute_dtype
from mixmae_jax.training.loop import Hook, TrainingLoop, restore_or_init
from mixmae_jax.training.optimizer import warmup_cosine_schedule
from mixmae_jax.training.metric_logging import WorkProgress
from mixmae_jax.training.data_position import resume_skips
from mixmae_jax.training.run_control import plan_run, use_compilation_cache
from mixmae_jax.training.stop_signal import StopSignal
from mixmae_jax.training.train_step import TrainState

log = logging.getLogger(__name__)

BEST_DIR = 'best'
HEAD_STDDEV = {'finetune': 2e-5, 'linear_probe': 0.01}


def _identity(params, opt_state):
  return params, opt_state


@dataclasses.dataclass(frozen=True)
class Task:
  """How one supervised task builds, trains and saves its params."""
  model: Classifier
  logits_fn: Callable
  tx: optax.GradientTransformation
  trainable: Optional[str]  # the optimized entry of params; None: all
  init_params: Callable[[jax.Array, Optional[Dict[str, Any]]], Any]  # (rng, encoder) -> params
  to_checkpoint: Callable[[Any, Any], Tuple[Any, Any]] = _identity
  from_checkpoint: Callable[[Any, Any], Tuple[Any, Any]] = _identity


def classifier_init_fn(model: Classifier, head_stddev: float) -> Callable:
  """(rng, pretrained encoder params or None) -> classifier params with a fresh head."""
  def init(rng, encoder):
    init_rng, head_rng = jax.random.split(rng)
    size = model.config.encoder.img_size
    params = dict(model.init(init_rng, jnp.zeros((2, size, size, 3)))['params'])
    if encoder is not None:
      params = pretrained.merge_encoder(params, encoder)
    params['head'] = pretrained.new_head(head_rng, model.config.encoder.num_features,
                                         model.config.num_classes, head_stddev)
    return params
  return init


def build_task(config, arch: ClassifierConfig, dtype, schedule) -> Task:
  """The fine-tuning or linear-probe Task of `config.task`."""
  model = Classifier(arch, dtype=dtype, options=options_from_config(config.model))
  classifier_init = classifier_init_fn(model, HEAD_STDDEV[config.task])
  if config.task == 'finetune':
    def logits_fn(params, images, train, rngs):
      return model.apply({'params': params}, images, train, rngs=rngs)

    abstract = jax.eval_shape(classifier_init, jax.random.PRNGKey(0), None)
    tx = layer_decayed_adamw(schedule, abstract, arch.encoder, layer_decay=config.layer_decay,
                             weight_decay=config.weight_decay, b1=config.adam_b1,
                             b2=config.adam_b2, grad_clip_norm=config.grad_clip_norm)
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


def config_arch(config, num_classes: int) -> ClassifierConfig:
  """The classifier the model fields describe (before any pretrained encoder adapts it)."""
  arch = finetune_checks.classifier_arch(config.model, num_classes)
  if config.task != 'finetune':  # probes and k-NN read a deterministic encoder
    arch = dataclasses.replace(arch, encoder=dataclasses.replace(arch.encoder,
                                                                 drop_path_rate=0.0))
  return arch


def pretrained_arch(config, num_classes: int
                    ) -> Tuple[ClassifierConfig, Optional[Dict[str, Any]]]:
  """(architecture, encoder params or None) from the model fields and `config.pretrained`."""
  arch = config_arch(config, num_classes)
  if not config.pretrained:
    log.warning('config.pretrained is empty: starting from a randomly initialized encoder')
    return arch, None
  encoder_params, encoder = pretrained.load_encoder(config.pretrained, arch.encoder)
  return dataclasses.replace(arch, encoder=encoder), encoder_params


def check_class_names(recorded: Optional[List[str]], current: List[str], what: str) -> None:
  """A resume must number the classes as its checkpoint did: renamed, added or removed class
  folders would shift every label silently."""
  if recorded is not None and list(recorded) != list(current):
    changed = [f'{i}: {a!r} -> {b!r}' for i, (a, b) in enumerate(zip(recorded, current))
               if a != b][:3]
    raise DataError(
        f'{what} was trained on {len(recorded)} classes {_names(recorded)} but the data now has '
        f'{len(current)} {_names(current)} (label {"; ".join(changed) or "count"} differs): '
        f'resuming would train with shifted labels. Restore the class folders as they were, or '
        f'fine-tune into a new --workdir.')


def _names(names: List[str], limit: int = 6) -> str:
  return '[' + ', '.join(map(repr, names[:limit])) + (', ...' if len(names) > limit else '') + ']'


def resolve_arch(config, num_classes: int, ckpt: checkpointing.Checkpointer,
                 class_names: Optional[List[str]] = None
                 ) -> Tuple[ClassifierConfig, Optional[Dict[str, Any]]]:
  """Like `pretrained_arch`, but a resumed run takes the architecture its newest readable
  checkpoint recorded (after checking it against the model fields, and its class names
  against `class_names`) and needs no pretrained file. Fields the model fields do not set (what
  adapting a pretrained encoder chose) are not compared."""
  for step in reversed(ckpt.steps()):
    try:
      meta = ckpt.read_meta(step)
      recorded = meta['arch']
    except checkpointing.CheckpointError as e:  # restore_latest sets the step aside
      log.error('%s', e)
      continue
    if class_names is not None:
      check_class_names(meta.get('class_names'), class_names,
                        f'checkpoint step {step} in {ckpt.directory}')
    unset = [f'encoder.{k}' for k in recorded.get('encoder', {}) if k not in config.model.encoder]
    architecture_match.check(recorded, architectures.to_dict(config_arch(config, num_classes)),
                             f'checkpoint step {step} in {ckpt.directory}', ignore=unset)
    return architectures.from_dict(recorded), None
  return pretrained_arch(config, num_classes)


def open_task(config):
  """Validate `config`; return (compute dtype, train source, eval source, number of classes)."""
  from mixmae_jax.data import labelled  # TensorFlow only here, not at import
  finetune_checks.validate(config, global_devices=jax.device_count(),
                           process_count=jax.process_count())
  dtype = resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  train_source = labelled.open_labelled(config.data, train=True)
  eval_source = labelled.open_labelled(config.data, train=False,
                                       class_names=train_source.class_names)
  found = train_source.num_classes
  if found < 2:
    raise DataError(f'{labelled.source_name(config.data)} has {found} class '
                    f'{train_source.class_names}: a classifier needs at least 2 (one folder per '
                    f'class under the root).')
  if 0 < config.model.num_classes < found:
    raise ConfigError(f'model.num_classes={config.model.num_classes} is smaller than the '
                      f'{found} classes of {labelled.source_name(config.data)}: labels >= '
                      f'{config.model.num_classes} would have no output. Set it to {found} or '
                      f'to 0 (from the data).')
  return dtype, train_source, eval_source, config.model.num_classes or found


def device_augment(config) -> DeviceAugment:
  a = config.augment
  settings = MixupSettings(mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha,
                           prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                           label_smoothing=a.label_smoothing)
  return DeviceAugment(mixup=settings, erase_prob=a.erase_prob)


def probe_statistics(config, task: Task, data_kwargs: Dict[str, Any]) -> Callable:
  """params -> params with the probe's feature mean and std measured on training images."""
  from mixmae_jax.data import labelled  # TensorFlow only here, not at import

  def standardize(params):
    per_host = config.eval_batch_size // jax.process_count()
    data = labelled.LabelledTrainInput(config.data, config.augment, per_host_batch=per_host,
                                       **data_kwargs)
    count = -(-config.probe.norm_examples // config.eval_batch_size)
    step = parallel.data_parallel(linear_probe.make_feature_moments_step(
        task.model, pixel_mean=config.data.mean, pixel_std=config.data.std), donate_state=False)
    batches = WorkProgress('probe feature statistics', count * config.eval_batch_size,
                           'images').over((next(data) for _ in range(count)),
                                          lambda batch: len(batch['image']) * jax.process_count())
    mean, std = linear_probe.feature_statistics(step, parallel.replicate(params['encoder']),
                                                batches)
    return dict(params, feature_mean=mean, feature_std=std)

  return standardize


def recorded_best(best: checkpointing.Checkpointer) -> float:
  """The top-1 of the best checkpoint saved so far (0 when none): a run killed after saving a
  new best and before its next regular checkpoint must not save that best again."""
  for step in reversed(best.steps()):
    try:
      return float(best.read_meta(step).get('best_top1', 0.0))
    except checkpointing.CheckpointError as e:
      log.error('%s', e)
  return 0.0


class EvaluationHook(Hook):
  """Top-1/top-5/loss every `eval_every_steps` (or epoch) and at the end, of the current params
  and of their EMA when one is kept; a new best top-1 is saved to WORKDIR/best."""

  def __init__(self, config, task: Task, source, image_size: int, every: int,
               best: checkpointing.Checkpointer, best_top1: float):
    self.c, self.source, self.image_size, self.every = config, source, image_size, every
    self.best, self.best_top1 = best, best_top1
    self.p_eval = parallel.data_parallel(make_eval_step(
        task.logits_fn, pixel_mean=config.data.mean, pixel_std=config.data.std),
        donate_state=False)

  def due(self, step: int, last: bool) -> bool:
    return last or step % self.every == 0

  def batches(self):
    from mixmae_jax.data import labelled  # pylint: disable=import-outside-toplevel
    return labelled.eval_batches(
        self.source, image_size=self.image_size, crop_pct=self.c.data.eval_crop_pct,
        per_host_batch=self.c.eval_batch_size // jax.process_count(),
        host_index=jax.process_index(), host_count=jax.process_count(),
        max_pixels=self.c.data.max_image_pixels)

  def scores(self, state: TrainState) -> Dict[str, float]:
    out = {f'eval_{k}': v for k, v in evaluate(self.p_eval, state.params, self.batches()).items()}
    ema = ema_params(state.opt_state)
    if ema is not None:
      scores = evaluate(self.p_eval, ema, self.batches())
      out.update({f'eval_ema_{k}': scores[k] for k in ('top1', 'top5', 'loss')})
    return out

  def done(self, loop: TrainingLoop, step: int, recorded: Dict[str, Any]) -> bool:
    return 'eval_top1' in recorded

  def __call__(self, loop: TrainingLoop, state: TrainState, step: int) -> Dict[str, float]:
    loop.metrics.sync()  # a non-finite step is reported, not evaluated
    started = time.perf_counter()
    scores = self.scores(state)
    if scores['eval_top1'] > self.best_top1:
      self.best_top1 = loop.meta['best_top1'] = scores['eval_top1']
      loop.save(self.best, state, step, with_opt_state=False)
    scores['best_top1'] = self.best_top1
    if loop.primary:
      print(f'eval step {step}: top-1 {scores["eval_top1"]:.2f} top-5 {scores["eval_top5"]:.2f} '
            f'loss {scores["eval_loss"]:.4f} (best top-1 {self.best_top1:.2f}; '
            f'{time.perf_counter() - started:.1f} s)', flush=True)
    loop.metric_log.write(step, scores)
    return scores


def finetune_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Fine-tune or linear-probe as `config` says; returns the final evaluation.

  Holds the workdir while it runs (`training/workdir.py`); raises `Preempted` when SIGTERM
  stopped it after a checkpoint.
  """
  finetune_checks.validate(config, global_devices=jax.device_count(),
                           process_count=jax.process_count())
  with StopSignal() as stop, run_workdir.claim(workdir, config) as claim:
    return _finetune(config, workdir, claim, stop)


def _finetune(config, workdir: str, claim, stop: StopSignal) -> Dict[str, float]:
  from mixmae_jax.data import labelled  # TensorFlow only here, not at import
  dtype, train_source, eval_source, num_classes = open_task(config)
  use_compilation_cache(config.get('compilation_cache_dir', 'auto'), workdir)
  plan = plan_run(config, train_source.size, jax.process_count())
  schedule = warmup_cosine_schedule(plan.peak_lr, plan.warmup_steps, plan.total_steps,
                                    config.min_lr)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    keep=config.keep_checkpoints)
  best = checkpointing.Checkpointer(checkpointing.checkpoint_dir(os.path.join(workdir, BEST_DIR)),
                                    keep=1)
  arch, encoder = resolve_arch(config, num_classes, ckpt, list(train_source.class_names))
  task = build_task(config, arch, dtype, schedule)
  data_kwargs = dict(image_size=arch.encoder.img_size, seed=config.seed,
                     host_index=jax.process_index(), host_count=jax.process_count())

  def init(encoder_params):
    params = task.init_params(jax.random.PRNGKey(config.seed), encoder_params)
    optimized = params if task.trainable is None else params[task.trainable]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=task.tx.init(optimized))

  state, position, start, meta = restore_or_init(ckpt, init, plan, task.to_checkpoint,
                                                 task.from_checkpoint, init_args=(encoder,),
                                                 arch=architectures.to_dict(arch))
  if meta is None and task.trainable is not None:  # a fresh probe: measure feature statistics
    state = state.replace(params=probe_statistics(config, task, data_kwargs)(state.params))
  skipped, skipped_ids = resume_skips(meta)
  data = labelled.LabelledTrainInput(config.data, config.augment,
                                     per_host_batch=plan.per_host_batch, start_position=position,
                                     skipped_before=skipped, known_skipped_ids=skipped_ids,
                                     **data_kwargs)
  best_top1 = max(float((meta or {}).get('best_top1', 0.0)), recorded_best(best))
  every = config.eval_every_steps if config.eval_every_steps > 0 else plan.steps_per_epoch
  evaluation = EvaluationHook(config, task, eval_source, arch.encoder.img_size, every, best,
                              best_top1)
  run_meta = {'arch': architectures.to_dict(arch), 'config': config.to_dict(),
              'task': config.task, 'dataset_size': plan.dataset_size,
              'total_steps': plan.total_steps, 'class_names': list(train_source.class_names),
              'best_top1': best_top1}
  log.info('%s: %d steps (%d per epoch of %d images), warmup %d, peak lr %.3g, %d classes, %d '
           'devices on %d hosts, starting at step %d', config.task, plan.total_steps,
           plan.steps_per_epoch, plan.dataset_size, plan.warmup_steps, plan.peak_lr, num_classes,
           jax.device_count(), jax.process_count(), start)
  step_fn = make_classification_step(
      task.logits_fn, task.tx, schedule, num_classes=num_classes, pixel_mean=config.data.mean,
      pixel_std=config.data.std, augment=device_augment(config),
      grad_accum_steps=config.grad_accum_steps, trainable=task.trainable)
  loop = TrainingLoop(config, workdir, plan, ckpt, run_meta, task.to_checkpoint, claim)
  loop.other_checkpointers.append(best)
  try:
    with data:
      results = loop.run(parallel.replicate(state), start, data, step_fn, [evaluation], stop)
    return {k: v for k, v in results.items() if k.startswith(('eval_', 'best_'))}
  finally:
    checkpointing.finish(ckpt, best)
