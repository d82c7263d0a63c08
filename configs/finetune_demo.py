"""Demo: fine-tune a demo pretraining on handwritten digits, on a CPU.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/mixmae_demo
  python -m mixmae_jax.measurement.digits_experiment --data_only --workdir=/tmp/digits
  python -m mixmae_jax.finetune --config=configs/finetune_demo.py --workdir=/tmp/finetune_demo \
      --config.pretrained=/tmp/mixmae_demo

`--config=configs/finetune_demo.py:vit` fine-tunes the MAE demo (configs/mae_demo.py) instead.
The model is the demo's (128x128); the data are scikit-learn's digits written as an ImageFolder
tree (/tmp/digits/data/{train,val}). The full recipe runs at toy scale: layer decay, drop path,
RandAugment, erasing, Mixup/CutMix and label smoothing.
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import finetune_config, on_demo_digits


ARGS = ('vit',)


def get_config(arg=None):
  encoder = 'vit' if 'vit' in words(arg, ARGS, __file__) else 'swin'
  c = on_demo_digits(finetune_config('tiny', encoder))
  c.batch_size, c.eval_batch_size = 32, 120
  c.num_train_steps, c.warmup_steps = 200, 20
  c.base_lr = 2e-3
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100, 100
  return c
