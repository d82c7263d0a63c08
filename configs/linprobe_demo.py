"""Demo: linear-probe a demo pretraining on handwritten digits, on a CPU (after configs/demo.py;
`--config=configs/linprobe_demo.py:vit` for configs/mae_demo.py).

  python -m mixmae_jax.finetune --config=configs/linprobe_demo.py --workdir=/tmp/linprobe_demo \
      --config.pretrained=/tmp/mixmae_demo
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.evaluation.finetune_config import linear_probe_config, on_demo_digits


ARGS = ('vit',)


def get_config(arg=None):
  encoder = 'vit' if 'vit' in words(arg, ARGS, __file__) else 'swin'
  c = on_demo_digits(linear_probe_config('tiny', encoder))
  c.probe.optimizer, c.probe.norm_examples = 'sgd', 1024
  c.batch_size, c.eval_batch_size = 64, 120
  c.num_train_steps, c.warmup_steps = 200, 20
  c.base_lr = 1.0
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100, 100
  return c
