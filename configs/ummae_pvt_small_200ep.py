"""UM-MAE PVT-S at 256, 200 epochs on ImageNet-1K (TFDS imagenet2012): the official recipe.

PVT-S v1 (dims 64, 128, 320, 512; depths 3, 4, 6, 3; spatial reduction 4, 2, 1, 1 on the compact
grid) with the fixed sin-cos table gathered with the shown tokens; otherwise as the Swin-T recipe
(`ummae_swin_tiny_200ep.py`): batch 4096, lr 1.5e-4 x batch / 256, 10 warmup epochs, decoder
512 x 2. Published: 79.31 top-1 fine-tuned, in 21.3 h on 8 GPUs (SimMIM 38.0 h).
  python -m mixmae_jax.train --config=configs/ummae_pvt_small_200ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('ummae', 'pvt', 'small')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=256, patch_size=4, embed_dims=(64, 128, 320, 512), depths=(3, 4,
                         6, 3), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1,
                         1))
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
