"""Demo: linear-probe the demo pretraining (configs/demo.py) on handwritten digits, on a CPU.

  python -m mixmae_jax.finetune --config=configs/linprobe_demo.py --workdir=/tmp/linprobe_demo \
      --config.pretrained=/tmp/mixmae_demo          # add --config.task=knn for k-NN

Data as in `finetune_demo.py`. SGD with momentum (LARS, MAE's choice, needs its huge batch).
"""
from mixmae_jax.finetune_config import linear_probe_config


def get_config():
  c = linear_probe_config('tiny')
  m = c.model
  m.img_size = 128
  m.embed_dim, m.depths, m.num_heads = 32, (1, 1, 2, 1), (1, 2, 4, 8)
  m.window_sizes = (8, 8, 8, 4)
  c.data.train_folder = '/tmp/digits/data/train'
  c.data.eval_folder = '/tmp/digits/data/val'
  c.data.crop_scale = (0.35, 1.0)
  c.data.hflip = False
  c.data.eval_crop_pct = 1.0
  c.probe.optimizer, c.probe.norm_examples = 'sgd', 1024
  c.batch_size, c.eval_batch_size = 64, 120
  c.num_train_steps, c.warmup_steps = 200, 20
  c.base_lr = 1.0
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 100, 100
  return c
