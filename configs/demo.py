"""Demo: a small MixMIM Swin pretrained with MixMAE on the package's own images, on a CPU.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/mixmae_demo

128 px inputs (a 4x4 mixing grid; stage grids 32, 16, 8, 4), width 32, a 128-wide decoder of 2
blocks, 300 steps of 32 images. Finishes in a few minutes on a 2-core CPU with a clearly falling
loss, and writes a checkpoint, metrics.jsonl, TensorBoard events and reconstruction PNGs.
configs/mae_demo.py is the same demo for MAE on a small ViT.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import demo_config


ARGS = ()


def get_config(arg=None):
  words(arg, ARGS, __file__)  # takes none: an argument is an error, not ignored
  return demo_config('mixmae', 'swin')
