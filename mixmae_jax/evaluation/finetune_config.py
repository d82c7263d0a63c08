"""Default configs of supervised evaluation: fine-tuning, linear probing and k-NN.

`python -m mixmae_jax.finetune` reads one of these (through a file in `configs/`); `task` picks
what it does. Fields are grouped like the pretraining config: `model` (the classifier), `data`
(labelled sources and crops), `augment` (RandAugment in the pipeline; erasing, Mixup, CutMix and
label smoothing on the devices), `probe` and `knn` (their own knobs), and top-level optimisation,
schedule, logging and checkpointing. `finetune_checks.validate` checks them all before anything
compiles.
"""

import ml_collections

from mixmae_jax import networks
from mixmae_jax.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from mixmae_jax.training.config_defaults import (add_compute_fields, add_input_guard_fields,
                                                  add_workdir_fields)

TASKS = ('finetune', 'linear_probe', 'knn')


def classifier_fields(size: str, encoder: str = 'swin',
                      drop_path_rate: float = 0.1) -> ml_collections.ConfigDict:
  """The classifier: `model.encoder` must match the pretrained encoder's shape (width, depth,
  heads, patch); input size, windows, pooling and drop path are the fine-tuning's to choose."""
  m = ml_collections.ConfigDict()
  module = networks.encoder_module(encoder)
  m.encoder = networks.encoder_fields(encoder, size)
  m.encoder.update(module.CLASSIFIER_FIELDS, drop_path_rate=drop_path_rate)
  m.num_classes = 0  # 0: the number of classes of the training data
  return add_compute_fields(m)


def labelled_data_fields() -> ml_collections.ConfigDict:
  """Labelled sources: ImageFolder trees (win over TFDS) or a TFDS dataset with labels."""
  d = ml_collections.ConfigDict()
  d.train_folder = ''  # ROOT/<class>/<images>
  d.eval_folder = ''  # the same class folder names
  d.tfds_name = ''  # e.g. 'imagenet2012'
  d.tfds_train_split = 'train'
  d.tfds_eval_split = 'validation'
  d.tfds_data_dir = ''
  d.tfds_manual_dir = ''
  d.crop_scale = (0.08, 1.0)  # RandomResizedCrop area range (timm's default)
  d.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)
  d.hflip = True
  d.eval_crop_pct = 224 / 256  # eval: resize to img_size / crop_pct, centre crop img_size
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  d.shuffle_buffer = 16384  # TFDS only
  d.num_parallel_calls = -1
  d.device_prefetch = 2
  return add_input_guard_fields(d)


def augment_fields() -> ml_collections.ConfigDict:
  a = ml_collections.ConfigDict()
  a.rand_augment = 'rand-m9-mstd0.5-inc1'  # '' = off
  a.erase_prob = 0.25  # timm 'pixel' mode, one box
  a.mixup_alpha = 0.8  # 0 = off
  a.cutmix_alpha = 1.0  # 0 = off
  a.mixup_prob = 1.0
  a.mixup_switch_prob = 0.5  # chance of CutMix when both are on
  a.label_smoothing = 0.1
  return a


def finetune_config(size: str = 'base', encoder: str = 'swin') -> ml_collections.ConfigDict:
  """The MixMIM / MAE fine-tuning recipe on ImageNet-1K (100 epochs, batch 1024, lr 5e-4)."""
  c = ml_collections.ConfigDict()
  c.task = 'finetune'
  c.pretrained = ''  # a checkpoint (workdir, checkpoints dir or step dir); '' = random init
  c.model = classifier_fields(size, encoder)
  c.data = labelled_data_fields()
  c.augment = augment_fields()
  c.probe = ml_collections.ConfigDict(dict(optimizer='lars', momentum=0.9, norm_examples=10000))
  c.knn = ml_collections.ConfigDict(dict(k=20, temperature=0.07))

  c.batch_size = 1024  # global images per optimizer update
  c.grad_accum_steps = 1
  c.eval_batch_size = 1024  # global
  c.num_epochs = 100
  c.num_train_steps = -1  # > 0 overrides num_epochs
  c.warmup_epochs = 5
  c.warmup_steps = -1  # >= 0 overrides warmup_epochs
  c.base_lr = 5e-4  # lr = base_lr * batch_size / 256
  c.min_lr = 1e-6
  c.layer_decay = 0.7  # 1.0 = off
  c.weight_decay = 0.05
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.grad_clip_norm = 0.0
  c.ema_decay = 0.0  # > 0: also evaluate an EMA of the weights (e.g. 0.9999)
  c.compute_dtype = 'auto'

  c.seed = 0
  c.compilation_cache_dir = 'auto'  # as in pretraining: WORKDIR/compilation_cache by default
  c.profile_steps = (0, 0)  # (first, last) steps to trace for TensorBoard; (0, 0): none
  c.log_every_steps = 50
  c.eval_every_steps = -1  # -1: once per epoch (and always at the end)
  c.checkpoint_every_steps = 1000
  c.save_in_background = True  # as in pretraining: saves copy on device, write from a thread
  c.keep_checkpoints = 2
  return add_workdir_fields(c)


def linear_probe_config(size: str = 'base', encoder: str = 'swin') -> ml_collections.ConfigDict:
  """MAE's linear probing recipe: 90 epochs, batch 16384, LARS, lr 0.1 x batch / 256, no
  weight decay, 10 warmup epochs, RandomResizedCrop + flip only. A ViT is probed on its cls
  token after the final norm (MAE's linprobe), a Swin on its averaged final norm."""
  c = finetune_config(size, encoder)
  c.task = 'linear_probe'
  c.model.encoder.update(networks.encoder_module(encoder).PROBE_FIELDS, drop_path_rate=0.0)
  a = c.augment
  a.rand_augment, a.erase_prob, a.label_smoothing = '', 0., 0.
  a.mixup_alpha, a.cutmix_alpha = 0., 0.
  c.batch_size, c.eval_batch_size = 16384, 1024
  c.num_epochs, c.warmup_epochs = 90, 10
  c.base_lr, c.min_lr, c.weight_decay, c.layer_decay = 0.1, 0.0, 0.0, 1.0
  return c


def shrink_task_for_local_run(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`--config=configs/NAME.py:runlocal`: the same recipe at toy size, to check a launch on a CPU.

  The encoder is the pretraining recipes' runlocal one, so a `:runlocal` pretraining checkpoint
  fine-tunes with it. TFDS is switched off: point data.train_folder and data.eval_folder at a
  small ImageFolder tree (`python -m mixmae_jax.measurement.digits_experiment --data_only
  --workdir=DIR`).
  """
  c.model.encoder.update(networks.encoder_module(c.model.encoder.name).RUNLOCAL)
  c.data.tfds_name = ''
  c.probe.norm_examples = 64
  c.batch_size, c.eval_batch_size, c.num_train_steps, c.warmup_steps = 8, 8, 10, 2
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 5, 10, 10
  return c


def on_demo_digits(c: ml_collections.ConfigDict,
                   data_root: str = '/tmp/digits/data') -> ml_collections.ConfigDict:
  """The demo pretraining's encoder (configs/demo.py, configs/mae_demo.py) on the digits
  ImageFolder tree that `python -m mixmae_jax.measurement.digits_experiment --data_only
  --workdir=/tmp/digits` writes."""
  c.model.encoder.update(networks.encoder_module(c.model.encoder.name).DEMO)
  c.data.train_folder = f'{data_root}/train'
  c.data.eval_folder = f'{data_root}/val'
  c.data.crop_scale = (0.35, 1.0)
  c.data.hflip = False  # digits are not mirror-symmetric
  c.data.eval_crop_pct = 1.0
  return c
