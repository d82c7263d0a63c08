"""What `python -m mixmae_jax.finetune` runs: the task a config names (`config.task`)."""


def run(config, workdir: str):
  """'finetune' and 'linear_probe' train (and resume from the newest checkpoint in `workdir`);
  'knn' only evaluates. Returns the final scores."""
  if config.task == 'knn':
    from mixmae_jax.evaluation import knn  # pylint: disable=import-outside-toplevel
    return knn.knn_evaluate(config, workdir)
  from mixmae_jax.evaluation import finetune_loop  # pylint: disable=import-outside-toplevel
  return finetune_loop.finetune_and_evaluate(config, workdir)
