"""Demo: a small UM-MAE Swin pretrained with UM-MAE on the images shipped with the package, on a
CPU.

  python -m mixmae_jax.train --config=configs/ummae_demo.py --workdir=/tmp/ummae_demo

128 px images: an 8x8 grid of 16 px units, one shown per 2x2 group (16 of 64), 12 of them seen
as themselves and 4 as the secondary-mask token; the encoder runs on the compact 16x16 token
grid. The batch and schedule are configs/demo.py's. Writes a checkpoint, metrics.jsonl,
TensorBoard events and reconstruction PNGs (original | shown units | reconstruction).
`:pvt` runs the same demo on a small PVT.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import demo_config


ARGS = ('pvt',)


def get_config(arg=None):
  encoder = 'pvt' if 'pvt' in words(arg, ARGS, __file__) else 'ummae_swin'
  return demo_config('ummae', encoder, 'tiny' if encoder == 'ummae_swin' else 'small')
