"""MixMAE Swin-Base/W14 at 224, 300 epochs on ImageNet-1K (TFDS imagenet2012).

Batch 2048, AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 x batch / 256, 40 warmup epochs, cosine to 0.
  python -m mixmae_jax.train --config=configs/mixmae_swin_base_w14_300ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('mixmae', 'base', 300)
  return shrink_for_local_run(c) if 'runlocal' in args else c
