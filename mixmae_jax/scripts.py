"""The console scripts besides `mixmae-train`, `mixmae-finetune` and `mixmae-convert` (whose
modules are their own entry points): each runs a command module's `main` the way
`python -m <module>` does, importing it only when called."""
import importlib
from typing import Callable

from mixmae_jax.cli import command

# script function -> (the command's module, whether it reads data with TensorFlow)
COMMANDS = {
    'weights': ('mixmae_jax.weights.__main__', False),
    'benchmark': ('mixmae_jax.measurement.benchmark', False),
    'gpu_check': ('mixmae_jax.measurement.gpu_check', False),
    'pipeline_benchmark': ('mixmae_jax.measurement.pipeline_benchmark', True),
    'save_stall_benchmark': ('mixmae_jax.measurement.save_stall_benchmark', False),
    'topk_benchmark': ('mixmae_jax.measurement.topk_attention_benchmark', False),
    'profile_summary': ('mixmae_jax.measurement.profile_summary', False),
    'cifar_experiment': ('mixmae_jax.measurement.cifar_experiment', True),
    'digits_experiment': ('mixmae_jax.measurement.digits_experiment', True),
    'tpu_sweep': ('mixmae_jax.measurement.tpu_sweep', False),
}


def _script(module: str, tensorflow: bool) -> Callable[[], None]:
  def run() -> None:
    command.run_main(importlib.import_module(module).main, tensorflow)
  return run


globals().update({name: _script(*spec) for name, spec in COMMANDS.items()})
