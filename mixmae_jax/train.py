"""Pretrain (or resume): parse flags, join the processes, run the loop.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/demo \
      [--config.FIELD=VALUE ...] [--coordinator_address=HOST:PORT --num_processes=N \
      --process_id=I]

The config names the objective (`model.objective.name`) and the encoder (`model.encoder.name`).
The same command resumes from the newest checkpoint in --workdir.
"""
from mixmae_jax.training import entry_point, pretraining

if __name__ == '__main__':
  entry_point.run_cli(pretraining.train_and_evaluate,
                      'Directory for checkpoints, metrics and pictures.')
