"""Fine-tune MixMAE Swin-B at 384 with windows 16/16/24/12 (Swin-B/W16-384) on ImageNet-1K.

The Base recipe (`finetune_swin_base_w14.py`) at 384: a 224/W14 pretraining checkpoint is moved
to 384 on loading (relative position bias tables and the absolute embedding resized bicubically,
`resolution.adapt_encoder`). Evaluation resizes to 384 and takes the whole image (crop_pct 1, as
the official code does above 224). The official code gives no other 384-specific values.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run
from mixmae_jax.networks.swin import MIXMIM_WINDOWS_384


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('base', img_size=384, window_sizes=MIXMIM_WINDOWS_384)
  c.data.eval_crop_pct = 1.0
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
