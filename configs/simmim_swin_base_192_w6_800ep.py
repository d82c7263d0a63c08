"""SimMIM Swin-B at 192 with windows of 6, 800 epochs on ImageNet-1K: the official recipe.

As the 100-epoch recipe (`simmim_swin_base_192_w6_100ep.py`) but lr 1e-4 x batch / 512
(= 5e-5 x batch / 256) and a step schedule: after 10 warmup epochs the lr stays constant and is
multiplied by 0.1 at epoch 700. Published: 84.0 top-1 fine-tuned at 224.
  python -m mixmae_jax.train --config=configs/simmim_swin_base_192_w6_800ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('simmim', 'swin', 'base')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=192, patch_size=4, embed_dim=128, depths=(2, 2, 18, 2),
                         num_heads=(4, 8, 16, 32), window_sizes=(6, 6, 6, 6), shifted_windows=True,
                         abs_pos_embed=False, finetune_rules='simmim')
  # the method
  c.model.objective.update(unit_size=32, mask_ratio=0.6, decoder='conv')
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.67, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=2048, num_epochs=800, warmup_epochs=10, base_lr=5e-5, min_lr=0.0,
           lr_schedule='step', lr_decay_epochs=(700,), lr_decay_factor=0.1, weight_decay=0.05,
           adam_b1=0.9, adam_b2=0.999, grad_clip_norm=5.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
