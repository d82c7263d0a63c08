"""Linear probe of an MAE ViT-B/16 encoder on ImageNet-1K with MAE's protocol.

90 epochs, batch 16384, LARS (momentum 0.9, no weight decay), lr 0.1 x batch / 256, 10 warmup
epochs, RandomResizedCrop + flip only; the cls token after the final norm, standardized (MAE's
BatchNorm without affine parameters). Published: 68.0 top-1. `--config.task=knn` for k-NN.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import linear_probe_config, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = linear_probe_config('base', 'vit')
  c.data.tfds_name = 'imagenet2012'
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
