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
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run
from mixmae_jax.networks import swin


ARGS = ('runlocal', '800ep')


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('base', img_size=224, window_sizes=(7, 7, 7, 7), **swin.STANDARD)
  c.batch_size = 2048
  c.warmup_epochs = 20
  c.base_lr, c.min_lr = 6.25e-4, 2.5e-7 * 2048 / 512
  c.layer_decay = 0.8 if '800ep' in args else 0.9
  c.grad_clip_norm = 5.0
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
