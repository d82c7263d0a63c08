"""Pretrain (or resume) a MixMAE model: parse flags, join the processes, run the loop.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/demo \
      [--config.FIELD=VALUE ...] [--coordinator_address=HOST:PORT --num_processes=N \
      --process_id=I]

The same command resumes from the newest checkpoint in --workdir.
"""
from absl import app

from mixmae_jax import entry_point, train_loop

if __name__ == '__main__':
  entry_point.define_flags('Directory for checkpoints, metrics and pictures.')
  app.run(entry_point.main_running(train_loop.train_and_evaluate))
