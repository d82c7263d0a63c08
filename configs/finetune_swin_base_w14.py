"""Fine-tune MixMAE Swin-B/W14 at 224 on ImageNet-1K (TFDS imagenet2012): MixMIM's recipe.

100 epochs, batch 1024, AdamW (0.9, 0.999), lr 5e-4 x batch / 256, layer decay 0.7, wd 0.05,
drop path 0.1, 5 warmup epochs, cosine to 1e-6, RandAugment rand-m9-mstd0.5-inc1, label
smoothing 0.1, Mixup 0.8, CutMix 1.0 (switch 0.5), random erasing 0.25; eval resize 256, crop 224.
  python -m mixmae_jax.finetune --config=configs/finetune_swin_base_w14.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('base')
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
