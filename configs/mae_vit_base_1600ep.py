"""MAE ViT-B/16 at 224, 1600 epochs on ImageNet-1K (TFDS imagenet2012), the baseline.

MAE's recipe: batch 4096, AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 x batch / 256, 40 warmup epochs,
cosine to 0, mask ratio 0.75, norm-pix targets, RandomResizedCrop(224, 0.2-1) + flip; decoder
512 wide, 8 blocks. Published (fine-tuned, 1600 epochs): 83.6 top-1; linear probe 68.0.
  python -m mixmae_jax.train --config=configs/mae_vit_base_1600ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import imagenet_recipe, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_recipe('mae', 'base', 1600, batch_size=4096)
  return shrink_for_local_run(c) if 'runlocal' in args else c
