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
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=0.875)
  # MAE's linear probe: LARS (momentum 0.9), batch 16384, 90 epochs (10 warmup), lr 0.1 x batch
  # / 256 cosine to 0, no weight decay; the features' BatchNorm statistics from 10,000 examples
  c.probe.update(optimizer='lars', momentum=0.9, norm_examples=10000)
  c.update(batch_size=16384, num_epochs=90, warmup_epochs=10, base_lr=0.1, min_lr=0.0,
           weight_decay=0.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
