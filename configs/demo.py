"""Demo: a small MixMIM Swin pretrained with MixMAE on the images shipped with the package, on a CPU.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/mixmae_demo

Finishes in a few minutes on a 2-core CPU with a clearly falling loss, and writes a checkpoint,
metrics.jsonl, TensorBoard events and reconstruction PNGs. configs/mae_demo.py is the same demo
for MAE on a small ViT.
"""
from mixmae_jax.networks import swin
from mixmae_jax.training.config_defaults import pretraining_config


def get_config():
  c = pretraining_config('mixmae', 'swin', 'tiny')
  c.model.encoder.update(swin.DEMO)  # 128 px: mask grid 4x4, stage grids 32, 16, 8, 4
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
