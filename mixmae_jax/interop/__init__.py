"""Interop: official PyTorch state dicts <-> our params, the `convert` tool, and `load()`.

**Official checkpoint families.** Each family of official checkpoints is one module here
(`mixmim`, `mae`), found from the `--arch` name's prefix (`mae_vit_base_patch16` -> `mae`), that
exposes `ARCHS` (the official model names it reads), `infer_arch(state_dict, arch_name, options)`
(the architecture a state dict was made with, read off its keys and shapes) and
`export_problem(arch, arch_name)` (why an architecture cannot be written as that official
model, or None). Parameter names are shared by construction, so `pytorch_names` maps every
family the same way.
"""
import importlib
from types import ModuleType
from typing import Dict

FAMILIES = ('mixmim', 'mae')


class ConversionError(ValueError):
  """A checkpoint that does not fit the requested conversion; the message says why."""


def family_module(name: str) -> ModuleType:
  return importlib.import_module(f'mixmae_jax.interop.{name}')


def official_archs() -> Dict[str, str]:
  """Every official model name `convert --arch` takes, with its family."""
  return {arch: family for family in FAMILIES for arch in family_module(family).ARCHS}
