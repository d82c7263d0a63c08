"""The objective contract as a checked declaration (`Objective`), the defaults most objectives
share, and `problems(module)`; `tests/test_contracts.py` checks every registered objective. The
prose of each item is in `objectives/__init__.py`.

What the training loop cannot yet host, and where that would change: an EMA teacher (a second
set of params updated outside the optimizer: `training/train_step.py`'s state and step), two
augmented views of each image (the input yields one crop: `data/pretraining.py` and the step's
batch), and feature targets from a frozen network (a second model's params in the state). An
objective needing one of these needs those changes, not only its own module.
"""
from types import ModuleType
from typing import Any, Dict, List, Mapping, Protocol, Sequence, Tuple

from mixmae_jax.networks.contract import missing

# The random streams an objective's model draws from, unless it says otherwise.
RNG_STREAMS = ('mask', 'drop_path')


def concrete(*arrays) -> bool:
  """Whether explicit masks can be checked now: none is traced (under jit they are values only
  when the step runs, and a step draws its own masks, which obey the law by construction)."""
  import jax  # pylint: disable=import-outside-toplevel
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def any_batch_size(config) -> Tuple[int, str]:
  """`batch_multiple` of an objective that treats every image alone: any micro-batch size."""
  del config
  return 1, ''


class Objective(Protocol):
  """What generic code (the step, the loop, checkpoints, pictures, benchmarks, loading) asks of
  an objective's module."""
  NAME: str
  DEFAULT_ENCODER: str
  Config: type
  Model: type
  RUNLOCAL: Mapping[str, Any]
  NO_WEIGHT_DECAY: frozenset
  RNG_STREAMS: Tuple[str, ...]

  def batch_multiple(self, config) -> Tuple[int, str]: ...
  def picture_columns(self, images, out, config) -> Tuple[Sequence[int], List[Any]]: ...
  def flops_per_image(self, config) -> Dict[str, float]: ...
  def fixed_buffers(self, config) -> Dict[str, Any]: ...


def problems(module: ModuleType) -> List[str]:
  """Everything `module` lacks or gets wrong of the objective contract ([] when whole)."""
  out = missing(module, Objective)
  if out:
    return out
  config = module.Config()
  if getattr(config, 'objective', None) != module.NAME:
    out.append(f'{module.NAME}.Config.objective is {getattr(config, "objective", None)!r}')
  if not hasattr(config, 'encoder') or not callable(getattr(config, 'problems', None)):
    out.append(f'{module.NAME}.Config needs an encoder and problems()')
  multiple, why = module.batch_multiple(config)
  if not (isinstance(multiple, int) and multiple >= 1 and isinstance(why, str)):
    out.append(f'{module.NAME}.batch_multiple gives {(multiple, why)!r}, not (n >= 1, reason)')
  if multiple > 1 and not why:
    out.append(f'{module.NAME}.batch_multiple needs a reason for its multiple {multiple}')
  if 'train' not in module.flops_per_image(config):
    out.append(f'{module.NAME}.flops_per_image has no train total')
  if not set(module.RNG_STREAMS) >= {'mask'}:
    out.append(f'{module.NAME}.RNG_STREAMS lacks mask')
  return out
