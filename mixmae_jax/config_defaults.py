"""The default pretraining config; every file in `configs/` starts from `pretraining_config()`.

Fields are grouped: `model` (architecture and objective), `data` (input pipeline), and the
top-level optimisation, schedule, logging and checkpointing knobs. `validate()` in
`config_checks.py` checks all of them before anything is compiled.
"""
import ml_collections

from mixmae_jax.architecture import MIXMIM_WINDOWS_224, SWIN_SIZES
from mixmae_jax.pixels import IMAGENET_MEAN, IMAGENET_STD


def encoder_fields(size: str) -> ml_collections.ConfigDict:
  """The Swin encoder of a named size from the table in `architecture.py`, and how it computes."""
  embed_dim, depths, num_heads = SWIN_SIZES[size]
  m = ml_collections.ConfigDict()
  m.img_size = 224
  m.patch_size = 4
  m.embed_dim = embed_dim
  m.depths = depths
  m.num_heads = num_heads
  m.window_sizes = MIXMIM_WINDOWS_224
  m.mlp_ratio = 4.0
  m.shifted_windows = False  # True gives the standard Swin (shifted windows)
  m.drop_path_rate = 0.0
  # How the model computes, never what (compute_options.py); params are the same under all.
  m.attention = 'auto'  # 'auto': cuDNN flash attention where it applies, else XLA; 'xla'; 'plain'
  m.scan_blocks = False  # True: compile one block per stage and loop (PERFORMANCE.md)
  m.remat = 'none'  # activation checkpointing per encoder block: 'none', 'dots' or 'block'
  return m


def model_fields(size: str) -> ml_collections.ConfigDict:
  """Encoder + decoder + MixMAE fields for a named size."""
  m = encoder_fields(size)
  m.decoder_dim = 512
  m.decoder_depth = 8
  m.decoder_num_heads = 16
  m.mask_ratio = 0.5
  m.range_mask_ratio = 0.0  # r is jittered by U(0, range) per draw
  m.norm_pix_loss = True
  m.mix_embedding = False  # the paper's ablation; the released model has none
  return m


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
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  d.shuffle_buffer = 16384  # TFDS only; image folders are shuffled exactly per epoch
  d.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
  d.device_prefetch = 2  # batches queued on the devices ahead of the step
  return d


def pretraining_config(size: str = 'base') -> ml_collections.ConfigDict:
  """MixMAE Swin-`size` pretraining with the published recipe (600 epochs, batch 2048)."""
  c = ml_collections.ConfigDict()
  c.model = model_fields(size)
  c.data = data_fields()

  c.batch_size = 2048  # global images per optimizer update (all hosts, all micro-batches)
  c.grad_accum_steps = 1  # micro-batches per update on each device
  c.num_epochs = 600
  c.num_train_steps = -1  # > 0 overrides num_epochs
  c.warmup_epochs = 40
  c.warmup_steps = -1  # > 0 overrides warmup_epochs
  c.base_lr = 1.5e-4  # lr = base_lr * batch_size / 256
  c.min_lr = 0.0
  c.weight_decay = 0.05
  c.adam_b1 = 0.9
  c.adam_b2 = 0.95
  c.grad_clip_norm = 0.0  # 0 = off, as in the recipe
  c.compute_dtype = 'auto'  # 'auto': bfloat16 on GPU/TPU, float32 on CPU

  c.seed = 0
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.reconstruction_every_steps = 5000
  c.reconstruction_pairs = 2  # image pairs drawn in each reconstruction PNG
  return c


def shrink_for_local_run(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`--config=configs/NAME.py:runlocal`: the same recipe at toy size, for a CPU smoke run.

  Keeps the objective and schedule shape; shrinks the model, batch, steps and image size so a
  published recipe can be checked end to end on a laptop before launching it for real.
  """
  m = c.model
  m.img_size, m.embed_dim, m.depths, m.num_heads = 64, 16, (1, 1, 1, 1), (1, 2, 4, 8)
  m.window_sizes = (4, 4, 4, 2)
  m.decoder_dim, m.decoder_depth, m.decoder_num_heads = 64, 1, 2
  c.data.image_folder, c.data.tfds_name = '', ''
  c.batch_size, c.num_train_steps, c.warmup_steps = 8, 10, 2
  c.log_every_steps, c.checkpoint_every_steps, c.reconstruction_every_steps = 5, 10, 0
  c.reconstruction_pairs = 1
  return c


def imagenet_recipe(size: str, epochs: int, arg=None) -> ml_collections.ConfigDict:
  """The published ImageNet-1K pretraining recipe for a Swin size (`arg='runlocal'` shrinks)."""
  c = pretraining_config(size)
  c.num_epochs = epochs
  c.data.tfds_name = 'imagenet2012'
  return shrink_for_local_run(c) if arg == 'runlocal' else c
