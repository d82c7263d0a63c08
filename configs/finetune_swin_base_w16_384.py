"""Fine-tune MixMAE Swin-B at 384 with windows 16/16/24/12 (Swin-B/W16-384) on ImageNet-1K.

The Base recipe (`finetune_swin_base_w14.py`) at 384: a 224/W14 pretraining checkpoint is moved
to 384 on loading (relative position bias tables and the absolute embedding resized bicubically,
`resolution.adapt_encoder`). Evaluation resizes to 384 and takes the whole image (crop_pct 1, as
the official code does above 224). The official code gives no other 384-specific values.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import finetune_config, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = finetune_config('base', 'swin')  # logging, checkpoints, data plumbing
  # the classifier: the pretrained encoder at its fine-tuning size, drop path, head
  c.model.encoder.update(img_size=384, patch_size=4, embed_dim=128, depths=(2, 2, 18, 2),
                         num_heads=(4, 8, 16, 32), window_sizes=(16, 16, 24, 12),
                         shifted_windows=False, drop_path_rate=0.1, abs_pos_embed=True,
                         finetune_rules='mixmim')
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=1.0)
  # RandAugment, erasing, Mixup / CutMix and label smoothing
  c.augment.update(rand_augment='rand-m9-mstd0.5-inc1', erase_prob=0.25, mixup_alpha=0.8,
                   cutmix_alpha=1.0, label_smoothing=0.1)
  # batch, schedule (lr = base_lr x batch / 256), layer-wise lr decay and AdamW
  c.update(batch_size=1024, num_epochs=100, warmup_epochs=5, base_lr=5e-4, min_lr=1e-6,
           layer_decay=0.7, weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, grad_clip_norm=0.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
