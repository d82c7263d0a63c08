"""Fine-tune, linear-probe or k-NN-evaluate a pretrained encoder on labelled images.

  python -m mixmae_jax.finetune --config=configs/finetune_demo.py --workdir=/tmp/ft \
      --config.pretrained=/tmp/mixmae_demo [--config.FIELD=VALUE ...] \
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

`config.task` picks what runs: 'finetune' and 'linear_probe' train (the same command resumes from
the newest checkpoint in --workdir), 'knn' only evaluates. A sibling of `mixmae_jax.train`, with
the same flags.
"""
from mixmae_jax.evaluation.tasks import run
from mixmae_jax.training import entry_point


if __name__ == '__main__':
  entry_point.run_cli(run, 'Directory for checkpoints and metrics.')
