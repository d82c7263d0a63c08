"""Interop: official PyTorch state dicts <-> our params, the `convert` tool, and `load()`.

**Official checkpoint families.** Each family of official checkpoints is one module here
(`mixmim`, `mae`, `ummae`, `simmim`), found from the `--arch` name's prefix
(`mae_vit_base_patch16` -> `mae`), that exposes `ARCHS` (the official model names it reads),
`infer_arch(state_dict, arch_name, options)` (the architecture a state dict was made with, read
off its keys and shapes) and `export_problem(arch, arch_name)` (why an architecture cannot be
written as that official model, or None). Parameter names are shared by construction, so
`pytorch_names` maps every family the same way; a family whose official modules nest the model
differently (SimMIM's `encoder.` prefix) also exposes `to_our_names(state_dict, arch)` and
`to_official_names(state_dict, arch)`, which rename keys on the way in and out. `contract.py`
declares this as a `typing.Protocol`; `tests/test_contracts.py` checks every family.
"""
import importlib
from types import ModuleType
from typing import Dict

FAMILIES = ('mixmim', 'mae', 'ummae', 'simmim')


class ConversionError(ValueError):
  """A checkpoint that does not fit the requested conversion; the message says why."""


def family_module(name: str) -> ModuleType:
  return importlib.import_module(f'mixmae_jax.interop.{name}')


def our_names(family: ModuleType, state_dict, arch):
  """An official state dict with our (dotted) names, by the family's renaming if it has one."""
  rename = getattr(family, 'to_our_names', None)
  return rename(state_dict, arch) if rename else dict(state_dict)


def official_names(family: ModuleType, state_dict, arch):
  """Inverse of `our_names`."""
  rename = getattr(family, 'to_official_names', None)
  return rename(state_dict, arch) if rename else dict(state_dict)


def official_archs() -> Dict[str, str]:
  """Every official model name `convert --arch` takes, with its family."""
  return {arch: family for family in FAMILIES for arch in family_module(family).ARCHS}
