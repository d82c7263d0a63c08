"""Demo: linear-probe the demo pretraining (configs/demo.py) on handwritten digits, on a CPU.

  python -m mixmae_jax.finetune --config=configs/linprobe_demo.py --workdir=/tmp/linprobe_demo \
      --config.pretrained=/tmp/mixmae_demo          # add --config.task=knn for k-NN

Data as in `finetune_demo.py`. SGD with momentum (LARS, MAE's choice, needs its huge batch).
"""
from mixmae_jax.finetune_config import linear_probe_config, on_demo_digits


def get_config():
  c = on_demo_digits(linear_probe_config('tiny'))
  c.probe.optimizer, c.probe.norm_examples = 'sgd', 1024
  c.batch_size, c.eval_batch_size = 64, 120
  c.num_train_steps, c.warmup_steps = 200, 20
  c.base_lr = 1.0
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100, 100
  return c
