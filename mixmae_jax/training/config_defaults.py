"""The default pretraining config; every pretraining file in `configs/` starts from it.

Fields are grouped: `model` (`model.encoder`: the encoder family, picked by `name`, and its size;
`model.objective`: the pretraining method, picked by `name`, and its settings; beside them how the
model computes: `attention`, `scan_blocks`, `remat`, `stacked_params`), `data` (input pipeline),
and the top-level optimisation, schedule, logging and checkpointing knobs.
`config_checks.validate` checks all of them before anything is compiled.
"""
from typing import Optional

import ml_collections

from mixmae_jax import networks, objectives
from mixmae_jax.data import DEFAULT_MAX_PIXELS
from mixmae_jax.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from mixmae_jax.networks.compute_options import ComputeOptions


def add_compute_fields(m: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """How the model computes, never what (compute_options.py); params are the same under all."""
  defaults = ComputeOptions()
  m.attention = defaults.attention  # 'auto': cuDNN flash attention where it applies, else XLA
  m.scan_blocks = defaults.scan_blocks  # True: compile one block per stage and loop
  m.remat = defaults.remat  # activation checkpointing per encoder block: none, dots or block
  # with scan_blocks, a pretraining state keeps each scanned stage's params stacked, as the scan
  # reads them (False: per block, stacked and split in every step; checkpoints restore into either)
  m.stacked_params = True
  return m


def model_fields(objective: str, encoder: Optional[str] = None,
                 size: str = 'base') -> ml_collections.ConfigDict:
  """`model`: an objective's fields and an encoder of a named size (its default family)."""
  module = objectives.objective_module(objective)
  m = ml_collections.ConfigDict()
  m.encoder = networks.encoder_fields(encoder or module.DEFAULT_ENCODER, size)
  m.objective = objectives.objective_fields(objective)
  return add_compute_fields(m)


def add_input_guard_fields(d: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Limits that keep one bad input from stopping or hanging a run."""
  # Images whose header declares more pixels are skipped and counted before decoding (PIL's own
  # decompression-bomb limit; ImageNet's largest photo has about 20 M)
  d.max_image_pixels = DEFAULT_MAX_PIXELS
  # Seconds the loop waits for a batch before stopping with an error naming the data source;
  # a folder whose files have all vanished is reported within about 30 s whatever this says
  d.stall_seconds = 900.0
  return d


def add_workdir_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """How a run holds its workdir (`training/workdir.py`)."""
  c.lease_heartbeat_seconds = 30.0  # how often the holder renews lease.json
  c.lease_stale_seconds = 120.0  # a lease not renewed for this long is taken over by a new run
  return c


def data_fields() -> ml_collections.ConfigDict:
  """Input pipeline. The source is `image_folder` if set, else TFDS `tfds_name`, else the images
  shipped with the package (for demos)."""
  d = ml_collections.ConfigDict()
  d.image_folder = ''  # a tree of images, read recursively
  d.tfds_name = ''  # e.g. 'imagenet2012'
  d.tfds_split = 'train'
  d.tfds_data_dir = ''  # TFDS data_dir ('' = TFDS default)
  d.tfds_manual_dir = ''  # where the ImageNet tars are, for imagenet2012's first build
  d.crop_scale = (0.2, 1.0)  # RandomResizedCrop area range
  d.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop aspect ratio range
  d.hflip = True
  d.fused_jpeg_decode = True  # decode only the crop of each JPEG (False: whole, then crop)
  # Decode a JPEG crop at least twice the input size at 1/2, 1/4 or 1/8 DCT scale (cheaper for
  # large source images; pixels differ slightly, see PERFORMANCE.md)
  d.dct_scaled_decode = False
  d.resize_method = 'bicubic'  # RandomResizedCrop's resize: bicubic (the recipes) or bilinear
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  d.shuffle_buffer = 16384  # TFDS only; image folders are shuffled exactly per epoch
  d.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
  d.device_prefetch = 2  # batches queued on the devices ahead of the step
  return add_input_guard_fields(d)


def pretraining_config(objective: str, encoder: Optional[str] = None,
                       size: str = 'base') -> ml_collections.ConfigDict:
  """Pretraining with `objective` on an encoder of `size` (the objective's default family), with
  600 epochs at batch 2048 and AdamW (0.9, 0.95); recipes override what differs."""
  c = ml_collections.ConfigDict()
  c.model = model_fields(objective, encoder, size)
  c.data = data_fields()

  c.batch_size = 2048  # global images per optimizer update (all hosts, all micro-batches)
  c.grad_accum_steps = 1  # micro-batches per update on each device
  c.num_epochs = 600
  c.num_train_steps = -1  # > 0 overrides num_epochs
  c.warmup_epochs = 40
  c.warmup_steps = -1  # >= 0 overrides warmup_epochs
  c.base_lr = 1.5e-4  # lr = base_lr * batch_size / 256
  c.lr_schedule = 'cosine'  # 'cosine' (to min_lr) or 'step' (x lr_decay_factor at each epoch)
  c.min_lr = 0.0
  c.lr_decay_epochs = (0,)  # 'step' only: epochs at which the lr is multiplied by the factor
  c.lr_decay_factor = 0.1
  c.weight_decay = 0.05
  c.adam_b1 = 0.9
  c.adam_b2 = 0.95
  c.grad_clip_norm = 0.0  # 0 = off, as in the recipe
  c.compute_dtype = 'auto'  # 'auto': bfloat16 on GPU/TPU, float32 on CPU
  # 'replicated': a full copy of params and optimizer state per device (pmap); 'sharded': split
  # over the devices (FSDP, jit + shard_map), for models whose state does not fit every device
  c.state_sharding = 'replicated'

  c.seed = 0
  # JAX's persistent compilation cache: 'auto' = JAX_COMPILATION_CACHE_DIR if set, else
  # WORKDIR/compilation_cache (a resumed run skips compiling); '' = off; or a directory
  c.compilation_cache_dir = 'auto'
  c.profile_steps = (0, 0)  # (first, last) steps to trace for TensorBoard's profiler; (0, 0): none
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  # True: a save copies the state on its devices and writes it from a background thread (the
  # step goes on; the copy needs one more state's memory on the devices for a moment). False: the
  # loop copies the state to the host itself, needing no device memory, and stalls while it does
  c.save_in_background = True
  c.keep_checkpoints = 3
  c.reconstruction_every_steps = 5000  # 0: only at the end
  c.reconstruction_images = 4  # images in each picture (rounded up to the objective's groups)
  return add_workdir_fields(c)


def shrink_for_local_run(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`--config=configs/NAME.py:runlocal`: the same recipe at toy size, for a CPU smoke run.

  Keeps the objective, the encoder family and the schedule's shape; shrinks the model (each
  module's `RUNLOCAL`), batch, steps and image size, and reads the shipped demo images, so a
  published recipe can be checked end to end on a laptop before launching it for real.
  """
  c.model.encoder.update(networks.encoder_module(c.model.encoder.name).RUNLOCAL)
  c.model.objective.update(objectives.objective_module(c.model.objective.name).RUNLOCAL)
  c.data.image_folder, c.data.tfds_name = '', ''
  c.batch_size, c.num_train_steps, c.warmup_steps = 8, 10, 2
  c.log_every_steps, c.checkpoint_every_steps, c.reconstruction_every_steps = 5, 10, 0
  c.reconstruction_images = 2
  return c


def demo_config(objective: str, encoder: str, size: str = 'base') -> ml_collections.ConfigDict:
  """A CPU demo: the encoder family's DEMO size and a small decoder (where the objective has
  one), 300 steps of batch 32 on the images shipped with the package, pictures every 100 steps;
  every demo config starts here and sets only what its method needs otherwise."""
  c = pretraining_config(objective, encoder, size)
  c.model.encoder.update(networks.encoder_module(encoder).DEMO)
  o = c.model.objective
  if 'decoder_dim' in o:
    o.decoder_dim, o.decoder_depth, o.decoder_num_heads = 128, 2, 4
  c.data.image_folder, c.data.tfds_name = '', ''  # the shipped demo images
  c.batch_size, c.num_train_steps, c.warmup_steps, c.base_lr = 32, 300, 20, 1.5e-3
  c.log_every_steps, c.checkpoint_every_steps, c.reconstruction_every_steps = 10, 100, 100
  return c
