"""SimMIM Swin-B at 192 with windows of 6, 800 epochs on ImageNet-1K: the official recipe.

As the 100-epoch recipe (`simmim_swin_base_192_w6_100ep.py`) but lr 1e-4 x batch / 512
(= 5e-5 x batch / 256) and a step schedule: after 10 warmup epochs the lr stays constant and is
multiplied by 0.1 at epoch 700. Published: 84.0 top-1 fine-tuned at 224.
  python -m mixmae_jax.train --config=configs/simmim_swin_base_192_w6_800ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.networks import swin
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('simmim', 'base', 800, encoder='swin', batch_size=2048,
                      warmup_epochs=10, base_lr=5e-5, adam_b2=0.999, grad_clip_norm=5.0,
                      lr_schedule='step', lr_decay_epochs=(700,), lr_decay_factor=0.1)
  c.model.encoder.update(img_size=192, window_sizes=(6, 6, 6, 6), **swin.STANDARD)
  c.data.crop_scale = (0.67, 1.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
