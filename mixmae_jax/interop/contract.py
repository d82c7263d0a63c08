"""The official-checkpoint family contract as a checked declaration (`CheckpointFamily`) and
`problems(module)`; `tests/test_contracts.py` checks every family. The prose is in
`interop/__init__.py`."""
from types import ModuleType
from typing import Any, List, Mapping, Optional, Protocol

from mixmae_jax.networks.contract import missing


class CheckpointFamily(Protocol):
  """What `convert` and `load` ask of a family of official checkpoints."""
  ARCHS: Mapping[str, Any]  # the official model names it reads

  def infer_arch(self, state_dict, arch_name: str, options: Mapping) -> Any: ...
  def export_problem(self, arch, arch_name: Optional[str]) -> Optional[str]: ...


def problems(module: ModuleType) -> List[str]:
  """Everything `module` lacks or gets wrong of the family contract ([] when whole)."""
  out = missing(module, CheckpointFamily)
  if out:
    return out
  prefix = module.__name__.rsplit('.', 1)[-1]
  out += [f'{prefix}.ARCHS names {name}, not under the family prefix {prefix}_'
          for name in module.ARCHS if not name.startswith(prefix + '_')]
  renames = [hasattr(module, n) for n in ('to_our_names', 'to_official_names')]
  if any(renames) and not all(renames):
    out.append(f'{prefix} renames keys one way only: give to_our_names and to_official_names')
  return out
