"""Pretrain (or resume) with any of the five methods.

  mixmae-train --config=demo --workdir=/tmp/mixmae_demo [--config.FIELD=VALUE ...]
  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/mixmae_demo

The config (a name such as `demo` or `mae_vit_base_800ep:runlocal`, or a path) names the
objective (`model.objective.name`) and the encoder (`model.encoder.name`). The same command
resumes from the newest checkpoint in --workdir. Multi-process runs that JAX cannot set up by
itself add --coordinator_address=HOST:PORT --num_processes=N --process_id=I. Exit codes: 0
finished, 75 preempted (rerun to resume), 1 failed.
"""
from mixmae_jax.training import entry_point, pretraining


def main() -> None:
  entry_point.run_cli(pretraining.train_and_evaluate,
                      'Directory for checkpoints, metrics and pictures.', __doc__,
                      tensorflow=True)


if __name__ == '__main__':
  main()
