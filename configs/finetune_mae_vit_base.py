"""Fine-tune MAE ViT-B/16 at 224 on ImageNet-1K (TFDS imagenet2012): MAE's recipe.

100 epochs, batch 1024, AdamW (0.9, 0.999), lr 5e-4 x batch / 256, layer decay 0.65, wd 0.05
(not on pos_embed and cls_token), drop path 0.1, 5 warmup epochs, cosine to 1e-6, RandAugment
rand-m9-mstd0.5-inc1, label smoothing 0.1, Mixup 0.8, CutMix 1.0, random erasing 0.25; global
average pool + fc_norm head; eval resize 256, crop 224. Published: 83.6 top-1 (1600 epochs).
  python -m mixmae_jax.finetune --config=configs/finetune_mae_vit_base.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('base', encoder='vit')
  c.layer_decay = 0.65
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
