"""MAE ViT-L/16 at 224, 1600 epochs on ImageNet-1K (TFDS imagenet2012), the baseline.

The ViT-B recipe (batch 4096, lr 1.5e-4 x batch / 256, 40 warmup epochs, mask ratio 0.75,
norm-pix) on ViT-L/16 (1024 wide, 24 blocks, 16 heads). Published (fine-tuned): 85.9 top-1.
  python -m mixmae_jax.train --config=configs/mae_vit_large_1600ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('mae', 'large', 1600, batch_size=4096)
  return shrink_for_local_run(c) if 'runlocal' in args else c
