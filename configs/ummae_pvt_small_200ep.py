"""UM-MAE PVT-S at 256, 200 epochs on ImageNet-1K (TFDS imagenet2012): the official recipe.

PVT-S v1 (dims 64, 128, 320, 512; depths 3, 4, 6, 3; spatial reduction 4, 2, 1, 1 on the compact
grid) with the fixed sin-cos table gathered with the shown tokens; otherwise as the Swin-T recipe
(`ummae_swin_tiny_200ep.py`): batch 4096, lr 1.5e-4 x batch / 256, 10 warmup epochs, decoder
512 x 2. Published: 79.31 top-1 fine-tuned, in 21.3 h on 8 GPUs (SimMIM 38.0 h).
  python -m mixmae_jax.train --config=configs/ummae_pvt_small_200ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('ummae', 'small', 200, encoder='pvt', batch_size=4096,
                      warmup_epochs=10)
  return shrink_for_local_run(c) if 'runlocal' in args else c
