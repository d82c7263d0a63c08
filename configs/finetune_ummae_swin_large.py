"""Fine-tune a UM-MAE Swin-L at 256 on ImageNet-1K (TFDS imagenet2012): UM-MAE's recipe.

The Swin-T recipe (`finetune_ummae_swin_tiny.py`) with layer decay 0.7 and drop path 0.2.
Published: 85.2 top-1 after 800 pretraining epochs.
  python -m mixmae_jax.finetune --config=configs/finetune_ummae_swin_large.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('large', encoder='ummae_swin', img_size=256, drop_path_rate=0.2)
  c.layer_decay = 0.7
  c.data.eval_crop_pct = 1.0
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
