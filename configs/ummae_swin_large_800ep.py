"""UM-MAE Swin-L at 256, 800 epochs on ImageNet-1K (TFDS imagenet2012): the official recipe.

UM-MAE's Swin-L (width 192, depths 2, 2, 18, 2, position MLP 64 wide) with a decoder of 8 blocks
(the official `mae_swin_large_256`); 40 warmup epochs; otherwise as the Swin-T recipe. Published:
85.2 top-1 fine-tuned (SimMIM 85.4).
  python -m mixmae_jax.train --config=configs/ummae_swin_large_800ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('ummae', 'ummae_swin', 'large')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=256, patch_size=4, embed_dim=192, depths=(2, 2, 18, 2),
                         num_heads=(6, 12, 24, 48), window_size=8, posmlp_dim=64)
  # the method
  c.model.objective.update(decoder_dim=512, decoder_depth=8, decoder_num_heads=16, unit_size=16,
                           sampling='balanced', secondary_ratio=0.25, norm_pix_loss=True,
                           decoder_pos_order='correct')
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.2, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=4096, num_epochs=800, warmup_epochs=40, base_lr=1.5e-4, min_lr=0.0,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.95, grad_clip_norm=0.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
