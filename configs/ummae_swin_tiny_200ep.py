"""UM-MAE Swin-T at 256, 200 epochs on ImageNet-1K (TFDS imagenet2012): the official recipe.

UM-MAE's Swin (position MLP over log-spaced coordinate differences, shifted windows of 8 on the
compact 32x32 grid, conv patch merging); uniform sampling from the official balanced pool,
secondary masking of 25% of the shown units; decoder 512 wide, 2 blocks; norm-pix MSE on the
hidden units. Batch 4096, AdamW (0.9, 0.95), wd 0.05 on every >= 2-D param (tokens and position
MLPs included), lr 1.5e-4 x batch / 256, 10 warmup epochs, cosine to 0, RandomResizedCrop(256,
0.2-1, bicubic) + flip. Published: 82.04 top-1 fine-tuned, in 25.0 h on 8 GPUs (SimMIM 49.3 h).
  python -m mixmae_jax.train --config=configs/ummae_swin_tiny_200ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('ummae', 'ummae_swin', 'tiny')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=256, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                         num_heads=(3, 6, 12, 24), window_size=8, posmlp_dim=32)
  # the method
  c.model.objective.update(decoder_dim=512, decoder_depth=2, decoder_num_heads=16, unit_size=16,
                           sampling='balanced', secondary_ratio=0.25, norm_pix_loss=True,
                           decoder_pos_order='correct')
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.2, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=4096, num_epochs=200, warmup_epochs=10, base_lr=1.5e-4, min_lr=0.0,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.95, grad_clip_norm=0.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
