"""Fine-tune a UM-MAE Swin-T at 256 on ImageNet-1K (TFDS imagenet2012): UM-MAE's recipe.

UM-MAE's Swin on the full 64x64 grid with windows of 16 (pretraining ran 8 on the compact grid;
the position MLPs read coordinates, so nothing is resized), drop path 0.1; head: average pool,
fc_norm, linear (init std 2e-5). 100 epochs, batch 1024, AdamW (0.9, 0.999), lr 5e-4 x
batch / 256, layer decay 0.85 (block k has id k + 1 and owns the merge before it; the head
trains at the full rate), wd 0.05 (1-D params exempt), 5 warmup epochs, cosine to 1e-6,
RandAugment rand-m9-mstd0.5-inc1, label smoothing 0.1, Mixup 0.8, CutMix 1.0, random erasing
0.25; eval resize 256, centre crop 256. Published: 82.04 top-1 after 200 pretraining epochs.
  python -m mixmae_jax.finetune --config=configs/finetune_ummae_swin_tiny.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import finetune_config, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = finetune_config('tiny', 'ummae_swin')  # logging, checkpoints, data plumbing
  # the classifier: the pretrained encoder at its fine-tuning size, drop path, head
  c.model.encoder.update(img_size=256, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                         num_heads=(3, 6, 12, 24), window_size=16, posmlp_dim=32,
                         drop_path_rate=0.1, head_norm='fc_norm')
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=1.0)
  # RandAugment, erasing, Mixup / CutMix and label smoothing
  c.augment.update(rand_augment='rand-m9-mstd0.5-inc1', erase_prob=0.25, mixup_alpha=0.8,
                   cutmix_alpha=1.0, label_smoothing=0.1)
  # batch, schedule (lr = base_lr x batch / 256), layer-wise lr decay and AdamW
  c.update(batch_size=1024, num_epochs=100, warmup_epochs=5, base_lr=5e-4, min_lr=1e-6,
           layer_decay=0.85, weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, grad_clip_norm=0.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
