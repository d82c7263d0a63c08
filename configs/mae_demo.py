"""Demo: a small ViT pretrained with MAE on the images shipped with the package, on a CPU.

  python -m mixmae_jax.train --config=configs/mae_demo.py --workdir=/tmp/mae_demo

The same images, decoder size, batch and schedule as configs/demo.py (MixMAE); the ViT (width
128, 4 blocks) sees 128 px images as 8x8 patches of 16 px and keeps a quarter of them. Writes a
checkpoint, metrics.jsonl, TensorBoard events and reconstruction PNGs (original | masked |
reconstruction | reconstruction + visible).
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import demo_config


ARGS = ()


def get_config(arg=None):
  words(arg, ARGS, __file__)  # takes none: an argument is an error, not ignored
  return demo_config('mae', 'vit')
