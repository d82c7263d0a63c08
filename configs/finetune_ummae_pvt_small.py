"""Fine-tune a UM-MAE PVT-S at 256 on ImageNet-1K (TFDS imagenet2012): UM-MAE's recipe.

PVT-S with spatial reduction 8, 4, 2, 1 (pretraining used 4, 2, 1, 1 on the compact grid) and a
learned position table started from the pretraining's sin-cos one (not weight-decayed); the
Swin-T recipe otherwise (`finetune_ummae_swin_tiny.py`): layer decay 0.85, drop path 0.1, eval
resize 256, centre crop 256. Published: 79.31 top-1 after 200 pretraining epochs.
  python -m mixmae_jax.finetune --config=configs/finetune_ummae_pvt_small.py --workdir=DIR \
      --config.pretrained=PRETRAIN_WORKDIR --config.data.tfds_manual_dir=/path/to/imagenet_tars
Append ':runlocal' to the config path for a toy-size smoke run of the same recipe on a CPU.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('small', encoder='pvt', img_size=256, drop_path_rate=0.1)
  c.layer_decay = 0.85
  c.data.eval_crop_pct = 1.0
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
