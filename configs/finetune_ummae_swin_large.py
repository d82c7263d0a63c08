"""Fine-tune a UM-MAE Swin-L at 256 on ImageNet-1K (TFDS imagenet2012): UM-MAE's recipe.

The Swin-T recipe (`finetune_ummae_swin_tiny.py`) with layer decay 0.7 and drop path 0.2.
Published: 85.2 top-1 after 800 pretraining epochs.
  python -m mixmae_jax.finetune --config=configs/finetune_ummae_swin_large.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import finetune_config, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = finetune_config('large', 'ummae_swin')  # logging, checkpoints, data plumbing
  # the classifier: the pretrained encoder at its fine-tuning size, drop path, head
  c.model.encoder.update(img_size=256, patch_size=4, embed_dim=192, depths=(2, 2, 18, 2),
                         num_heads=(6, 12, 24, 48), window_size=16, posmlp_dim=64,
                         drop_path_rate=0.2, head_norm='fc_norm')
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=1.0)
  # RandAugment, erasing, Mixup / CutMix and label smoothing
  c.augment.update(rand_augment='rand-m9-mstd0.5-inc1', erase_prob=0.25, mixup_alpha=0.8,
                   cutmix_alpha=1.0, label_smoothing=0.1)
  # batch, schedule (lr = base_lr x batch / 256), layer-wise lr decay and AdamW
  c.update(batch_size=1024, num_epochs=100, warmup_epochs=5, base_lr=5e-4, min_lr=1e-6,
           layer_decay=0.7, weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, grad_clip_norm=0.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
