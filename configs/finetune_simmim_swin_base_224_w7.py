"""Fine-tune a SimMIM Swin-B at 224 with windows of 7 on ImageNet-1K: SimMIM's recipe.

The standard Swin (shifted windows, no absolute embedding); a 192/W6 pretraining is moved to
W7 by SimMIM's geometric interpolation of the bias tables. 100 epochs, batch 2048, AdamW (0.9,
0.999), lr 1.25e-3 x batch / 512 (= 6.25e-4 x batch / 256), 20 warmup epochs, cosine to
2.5e-7 x batch / 512, layer decay 0.9 (SimMIM's ids: a patch merging shares the id of the last
block of its own stage; the head trains at the full rate), wd 0.05 (not on 1-D params and the
bias tables), drop path 0.1, gradient clipping at 5, RandAugment rand-m9-mstd0.5-inc1, label
smoothing 0.1, Mixup 0.8, CutMix 1.0, random erasing 0.25; eval resize 256, crop 224.
`:800ep` gives the 800-epoch pretraining's layer decay, 0.8. Published: 83.5 (100 epochs), 84.0
(800 epochs) top-1.
  python -m mixmae_jax.finetune --config=configs/finetune_simmim_swin_base_224_w7.py \
      --workdir=DIR --config.pretrained=PRETRAIN_WORKDIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import finetune_config, shrink_task_for_local_run


ARGS = ('runlocal', '800ep')


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = finetune_config('base', 'swin')  # logging, checkpoints, data plumbing
  # the classifier: the pretrained encoder at its fine-tuning size, drop path, head
  c.model.encoder.update(img_size=224, patch_size=4, embed_dim=128, depths=(2, 2, 18, 2),
                         num_heads=(4, 8, 16, 32), window_sizes=(7, 7, 7, 7), shifted_windows=True,
                         drop_path_rate=0.1, abs_pos_embed=False, finetune_rules='simmim')
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=0.875)
  # RandAugment, erasing, Mixup / CutMix and label smoothing
  c.augment.update(rand_augment='rand-m9-mstd0.5-inc1', erase_prob=0.25, mixup_alpha=0.8,
                   cutmix_alpha=1.0, label_smoothing=0.1)
  # batch, schedule (lr = base_lr x batch / 256), layer-wise lr decay and AdamW
  c.update(batch_size=2048, num_epochs=100, warmup_epochs=20, base_lr=6.25e-4,
           min_lr=2.5e-7 * 2048 / 512, layer_decay=0.8 if '800ep' in args else 0.9,
           weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, grad_clip_norm=5.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
