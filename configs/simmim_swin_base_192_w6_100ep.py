"""SimMIM Swin-B at 192 with windows of 6, 100 epochs on ImageNet-1K: the official recipe.

The standard Swin (shifted windows, no absolute position embedding); per image a random 60% of
the 32 px units (ceil: 22 of 36) masked by a learned token after the patch embedding; decoder
Conv1x1 + 32x pixel shuffle; L1 on the masked pixels. Batch 2048, AdamW (0.9, 0.999), wd 0.05
(not on the mask token and the bias tables), lr 2e-4 x batch / 512 (= 1e-4 x batch / 256),
10 warmup epochs, cosine to 1e-5 x batch / 512, gradient clipping at 5, RandomResizedCrop(192,
0.67-1) + flip. SimMIM warms up from 1e-6 x batch / 512 and crops bilinearly; here the warmup
starts at 0 and crops are bicubic. Published: 83.5 top-1 fine-tuned at 224.
  python -m mixmae_jax.train --config=configs/simmim_swin_base_192_w6_100ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.networks import swin
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


def simmim_recipe(epochs: int):
  """SimMIM's Swin-B pretraining at 192/W6 with the schedule fields of the 100-epoch run."""
  c = imagenet_recipe('simmim', 'base', epochs, encoder='swin', batch_size=2048,
                      warmup_epochs=10, base_lr=1e-4, min_lr=1e-5 * 2048 / 512, adam_b2=0.999,
                      grad_clip_norm=5.0)
  c.model.encoder.update(img_size=192, window_sizes=(6, 6, 6, 6), **swin.STANDARD)
  c.data.crop_scale = (0.67, 1.0)
  return c


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = simmim_recipe(100)
  return shrink_for_local_run(c) if 'runlocal' in args else c
