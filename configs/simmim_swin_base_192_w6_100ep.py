"""SimMIM Swin-B at 192 with windows of 6, 100 epochs on ImageNet-1K: the official recipe.

The standard Swin (shifted windows, no absolute position embedding); per image a random 60% of
the 32 px units (ceil: 22 of 36) masked by a learned token after the patch embedding; decoder
Conv1x1 + 32x pixel shuffle; L1 on the masked pixels. Batch 2048, AdamW (0.9, 0.999), wd 0.05
(not on the mask token and the bias tables), lr 2e-4 x batch / 512 (= 1e-4 x batch / 256),
10 warmup epochs, cosine to 1e-5 x batch / 512, gradient clipping at 5, RandomResizedCrop(192,
0.67-1) + flip. SimMIM warms up from 1e-6 x batch / 512 and crops bilinearly; here the warmup
starts at 0 and crops are bicubic. Published: 83.5 top-1 fine-tuned at 224.
  python -m mixmae_jax.train --config=configs/simmim_swin_base_192_w6_100ep.py --workdir=DIR \
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
  c.update(batch_size=2048, num_epochs=100, warmup_epochs=10, base_lr=1e-4, min_lr=4e-5,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, grad_clip_norm=5.0)
  return shrink_for_local_run(c) if 'runlocal' in args else c
