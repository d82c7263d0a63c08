"""Demo: a small standard Swin pretrained with SimMIM on the images shipped with the package, on a
CPU.

  python -m mixmae_jax.train --config=configs/simmim_demo.py --workdir=/tmp/simmim_demo

128 px images: a 4x4 grid of 32 px units of which ceil(16 x 0.6) = 10 are masked by the learned
token; the encoder (shifted windows, no absolute embedding) runs on every token. The batch and
schedule are configs/demo.py's, with a larger lr (AdamW (0.9, 0.999) and clipping at 5 as
SimMIM). Writes a
checkpoint, metrics.jsonl, TensorBoard events and reconstruction PNGs (original | masked input |
prediction | prediction at masked units + visible).
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.networks import swin
from mixmae_jax.training.config_defaults import demo_config


ARGS = ()


def get_config(arg=None):
  words(arg, ARGS, __file__)  # takes none: an argument is an error, not ignored
  c = demo_config('simmim', 'swin', 'tiny')
  c.model.encoder.update(**swin.STANDARD)
  c.base_lr = 5e-3  # L1 on raw pixels learns slower than the norm-pix demos at 1.5e-3
  c.adam_b2, c.grad_clip_norm = 0.999, 5.0
  return c
