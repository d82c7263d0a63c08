"""The console scripts besides `mixmae-train`, `mixmae-finetune` and `mixmae-convert` (whose
modules are their own entry points): each runs a command module's `main` the way
`python -m <module>` does, importing it only when called."""
import importlib

from mixmae_jax.cli import command


def _run(module: str, tensorflow: bool = False) -> None:
  command.run_main(importlib.import_module(module).main, tensorflow)


def weights() -> None:
  _run('mixmae_jax.weights.__main__')


def benchmark() -> None:
  _run('mixmae_jax.measurement.benchmark')


def gpu_check() -> None:
  _run('mixmae_jax.measurement.gpu_check')


def pipeline_benchmark() -> None:
  _run('mixmae_jax.measurement.pipeline_benchmark', tensorflow=True)


def save_stall_benchmark() -> None:
  _run('mixmae_jax.measurement.save_stall_benchmark')


def topk_benchmark() -> None:
  _run('mixmae_jax.measurement.topk_attention_benchmark')


def profile_summary() -> None:
  _run('mixmae_jax.measurement.profile_summary')


def cifar_experiment() -> None:
  _run('mixmae_jax.measurement.cifar_experiment', tensorflow=True)


def digits_experiment() -> None:
  _run('mixmae_jax.measurement.digits_experiment', tensorflow=True)
