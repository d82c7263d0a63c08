"""MixMAE Swin-Large/W14 at 224, 600 epochs on ImageNet-1K (TFDS imagenet2012).

Batch 2048, AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 x batch / 256, 40 warmup epochs, cosine to 0.
  python -m mixmae_jax.train --config=configs/mixmae_swin_large_w14_600ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('mixmae', 'swin', 'large')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=224, patch_size=4, embed_dim=192, depths=(2, 2, 18, 2),
                         num_heads=(6, 12, 24, 48), window_sizes=(14, 14, 14, 7),
                         shifted_windows=False, abs_pos_embed=True, finetune_rules='mixmim')
  # the method
  c.model.objective.update(decoder_dim=512, decoder_depth=8, decoder_num_heads=16, mask_ratio=0.5,
                           range_mask_ratio=0.0, norm_pix_loss=True, mix_embedding=False)
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.2, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=2048, num_epochs=600, warmup_epochs=40, base_lr=1.5e-4, min_lr=0.0,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.95, grad_clip_norm=0.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
