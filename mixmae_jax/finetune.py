"""Fine-tune, linear-probe or k-NN-evaluate a pretrained encoder on labelled images.

  mixmae-finetune --config=finetune_demo --workdir=/tmp/ft --config.pretrained=/tmp/mixmae_demo
  python -m mixmae_jax.finetune --config=configs/finetune_demo.py --workdir=/tmp/ft ...

`config.task` picks what runs: 'finetune' and 'linear_probe' train (the same command resumes from
the newest checkpoint in --workdir), 'knn' only evaluates. `config.pretrained` is a workdir of
`mixmae-train` or a converted official checkpoint. The flags are those of `mixmae-train`.
"""
from mixmae_jax.evaluation.tasks import run  # `finetune.run(config, workdir)` from Python
from mixmae_jax.training import entry_point


def main() -> None:
  entry_point.run_cli(run, 'Directory for checkpoints and metrics.', __doc__, tensorflow=True)


if __name__ == '__main__':
  main()
