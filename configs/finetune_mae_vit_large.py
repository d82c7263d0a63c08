"""Fine-tune MAE ViT-L/16 at 224 on ImageNet-1K: MAE's recipe for Large.

50 epochs, batch 1024, lr 1e-3 x batch / 256, layer decay 0.75, drop path 0.2; otherwise as
configs/finetune_mae_vit_base.py. Published: 85.9 top-1 (1600-epoch pretraining).
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('large', encoder='vit', drop_path_rate=0.2)
  c.base_lr, c.layer_decay = 1e-3, 0.75
  if 'runlocal' in args:
    return shrink_task_for_local_run(c)
  c.num_epochs = 50
  return c
