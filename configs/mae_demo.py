"""Demo: a small ViT pretrained with MAE on the images shipped with the package, on a CPU.

  python -m mixmae_jax.train --config=configs/mae_demo.py --workdir=/tmp/mae_demo

The same images, batch and schedule as configs/demo.py (MixMAE); the ViT sees 128 px images as
8x8 patches of 16 px and keeps a quarter of them. Writes a checkpoint, metrics.jsonl,
TensorBoard events and reconstruction PNGs (original | masked | reconstruction |
reconstruction + visible).
"""
from mixmae_jax.networks import vit
from mixmae_jax.training.config_defaults import pretraining_config


def get_config():
  c = pretraining_config('mae', 'vit', 'base')
  c.model.encoder.update(vit.DEMO)
  o = c.model.objective
  o.decoder_dim, o.decoder_depth, o.decoder_num_heads = 128, 2, 4
  c.data.image_folder, c.data.tfds_name = '', ''  # the shipped demo images
  c.batch_size = 32
  c.num_train_steps = 300
  c.warmup_steps = 20
  c.base_lr = 1.5e-3
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.reconstruction_every_steps = 100
  return c
