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
from mixmae_jax.evaluation.finetune_config import imagenet_finetune, shrink_task_for_local_run


ARGS = ('runlocal',)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = imagenet_finetune('tiny', encoder='ummae_swin', img_size=256, drop_path_rate=0.1)
  c.layer_decay = 0.85
  c.data.eval_crop_pct = 1.0  # resize 256, centre crop 256
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
