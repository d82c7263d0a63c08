"""Demo: fine-tune the demo pretraining (configs/demo.py) on handwritten digits, on a CPU.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/mixmae_demo
  python -m mixmae_jax.digits_experiment --data_only --workdir=/tmp/digits
  python -m mixmae_jax.finetune --config=configs/finetune_demo.py --workdir=/tmp/finetune_demo \
      --config.pretrained=/tmp/mixmae_demo

The model is the demo's (128x128, 4 stages); the data are scikit-learn's digits written as an
ImageFolder tree (/tmp/digits/data/{train,val}). The full recipe runs at toy scale: layer decay,
drop path, RandAugment, erasing, Mixup/CutMix and label smoothing.
"""
from mixmae_jax.finetune_config import finetune_config, on_demo_digits


def get_config():
  c = on_demo_digits(finetune_config('tiny'))
  c.batch_size, c.eval_batch_size = 32, 120
  c.num_train_steps, c.warmup_steps = 200, 20
  c.base_lr = 2e-3
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100, 100
  return c
