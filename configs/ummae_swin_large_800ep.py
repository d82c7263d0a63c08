"""UM-MAE Swin-L at 256, 800 epochs on ImageNet-1K (TFDS imagenet2012): the official recipe.

UM-MAE's Swin-L (width 192, depths 2, 2, 18, 2, position MLP 64 wide) with a decoder of 8 blocks
(the official `mae_swin_large_256`); 40 warmup epochs; otherwise as the Swin-T recipe. Published:
85.2 top-1 fine-tuned (SimMIM 85.4).
  python -m mixmae_jax.train --config=configs/ummae_swin_large_800ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('ummae', 'large', 800, encoder='ummae_swin', batch_size=4096,
                      warmup_epochs=40)
  c.model.objective.decoder_depth = 8
  return shrink_for_local_run(c) if 'runlocal' in args else c
