"""Linear probe of a UM-MAE Swin-T encoder on ImageNet-1K with MAE's protocol.

UM-MAE publishes no probe; this is MAE's (90 epochs, batch 16384, LARS, lr 0.1 x batch / 256,
no weight decay, standardized features) on the encoder run over the full 256 grid with windows of
16, pooled after the pretraining's final norm. `--config.task=knn` gives the k-NN accuracy
instead; `:pvt` probes a UM-MAE PVT-S (spatial reduction of the pretraining, 4, 2, 1, 1).
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import linear_probe_config, shrink_task_for_local_run


ARGS = ('pvt', 'runlocal')


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  encoder = 'pvt' if 'pvt' in args else 'ummae_swin'
  c = linear_probe_config('small' if encoder == 'pvt' else 'tiny', encoder)
  c.model.encoder.img_size = 256
  # ImageNet-1K; RandomResizedCrop(scale) + flip, evaluation resize / crop_pct
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.08, 1.0), eval_crop_pct=1.0)
  # MAE's linear probe: LARS (momentum 0.9), batch 16384, 90 epochs (10 warmup), lr 0.1 x batch
  # / 256 cosine to 0, no weight decay; the features' BatchNorm statistics from 10,000 examples
  c.probe.update(optimizer='lars', momentum=0.9, norm_examples=10000)
  c.update(batch_size=16384, num_epochs=90, warmup_epochs=10, base_lr=0.1, min_lr=0.0,
           weight_decay=0.0)
  return shrink_task_for_local_run(c) if 'runlocal' in args else c
