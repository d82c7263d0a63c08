"""MAE ViT-L/16 at 224, 1600 epochs on ImageNet-1K (TFDS imagenet2012), the baseline.

The ViT-B recipe (batch 4096, lr 1.5e-4 x batch / 256, 40 warmup epochs, mask ratio 0.75,
norm-pix) on ViT-L/16 (1024 wide, 24 blocks, 16 heads). Published (fine-tuned): 85.9 top-1.
  python -m mixmae_jax.train --config=configs/mae_vit_large_1600ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('mae', 'vit', 'large')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16)
  # the method
  c.model.objective.update(decoder_dim=512, decoder_depth=8, decoder_num_heads=16, mask_ratio=0.75,
                           norm_pix_loss=True)
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.2, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=4096, num_epochs=1600, warmup_epochs=40, base_lr=1.5e-4, min_lr=0.0,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.95, grad_clip_norm=0.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
