"""Configs by name: `--config=demo`, `--config=mixmae_swin_base_w14_600ep:runlocal`, or a path.

The repository's top-level `configs/` is installed with the package as `mixmae_jax.configs`, so
a non-editable install runs a recipe from any directory by its name. A path (anything ending in
`.py` or naming an existing file) is used as given; a name is looked up among the installed
recipes (in a source checkout, the checkout's `configs/`).
"""
import difflib
import importlib.resources
import importlib.util
import os
import re
from typing import List, Optional, Sequence


class ConfigNotFound(Exception):
  """A `--config` that names neither a file nor an installed recipe."""


def configs_dir() -> str:
  """Where the recipes are: the installed `mixmae_jax.configs`, else the checkout's `configs/`."""
  try:
    installed = importlib.resources.files('mixmae_jax.configs')
    if installed.is_dir() and any(p.name.endswith('.py') for p in installed.iterdir()):
      return str(installed)
  except (ModuleNotFoundError, TypeError):  # running from a checkout that is not installed
    pass
  here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(here, 'configs')


def names() -> List[str]:
  """The recipes found by name, sorted."""
  directory = configs_dir()
  if not os.path.isdir(directory):
    return []
  return sorted(f[:-3] for f in os.listdir(directory)
                if f.endswith('.py') and not f.startswith('_'))


def resolve(spec: str) -> str:
  """`NAME[:args]` or `PATH[:args]` -> `PATH[:args]` of an existing file, or ConfigNotFound."""
  path, colon, args = spec.partition(':')
  if os.path.isfile(path):
    return spec
  known = names()
  name = os.path.basename(path)[:-3] if path.endswith('.py') else path
  # a bare name, or the checkout's relative path (`configs/demo.py`) run from elsewhere
  if os.path.dirname(path) in ('', 'configs') and name in known:
    return os.path.join(configs_dir(), name + '.py') + colon + args
  close = difflib.get_close_matches(name, known, n=3)
  hint = f' Did you mean {" or ".join(close)}?' if close else (
      f' Configs by name: {", ".join(known)}.' if known else '')
  raise ConfigNotFound(f'--config={spec}: no config file {path!r}.{hint}')


def resolve_argv(argv: Sequence[str], flag_names: Sequence[str] = ('config',)) -> List[str]:
  """argv with every `--config=SPEC` (and the other named flags) given as a file path."""
  out = []
  for arg in argv:
    if out and out[-1] in [f'--{flag}' for flag in flag_names]:  # `--config NAME`
      arg = resolve(arg)
    for flag in flag_names:
      prefix = f'--{flag}='
      if arg.startswith(prefix):
        arg = prefix + resolve(arg[len(prefix):])
    out.append(arg)
  return out


def flag_error(error: Exception) -> str:
  """One line for absl's error about a flag; a config file that raised while loading carries
  the whole traceback in it, of which the flag and the exception's own line are kept."""
  message = str(error)
  if 'Traceback (most recent call last)' not in message:
    return message
  flag = re.match(r'flag (.+?): Error whilst parsing', message)
  last = [line for line in message.splitlines() if line.strip()][-1].strip()
  return f'{flag.group(1) if flag else "the config"}: {last}'


def load(spec: str):
  """`path/to/config.py[:arg]` -> its `get_config(arg)`, as `--config` reads it."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('mixmae_jax_config_file', path)
  if module_spec is None:
    raise FileNotFoundError(f'no config file at {path}')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _field_paths(node, prefix: str = '') -> List[str]:
  out = []
  for key, value in node.items():
    out.append(prefix + key)
    if hasattr(value, 'items'):
      out += _field_paths(value, prefix + key + '.')
  return out


def unknown_field_message(argv: Sequence[str], flag_name: str = 'config') -> Optional[str]:
  """One `error:` line for the first `--config.FIELD=VALUE` naming no field, with the field it
  probably meant; None when every override names a field."""
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith(f'--{flag_name}=')), None)
  if spec is None:
    return None
  try:
    paths = _field_paths(load(resolve(spec)))
  except Exception:  # pylint: disable=broad-except  (the config flag reports its own errors)
    return None
  for arg in argv:
    if not arg.startswith(f'--{flag_name}.'):
      continue
    field = arg[len(flag_name) + 3:].split('=', 1)[0]
    if field in paths:
      continue
    leaf = field.rsplit('.', 1)[-1]
    guesses = [p for p in paths if p.rsplit('.', 1)[-1] == leaf] or \
        difflib.get_close_matches(field, paths, n=3)
    hint = f' Did you mean {" or ".join(guesses[:3])}?' if guesses else ''
    return (f'error: {arg.split("=", 1)[0]}: the config {spec} has no field {field!r}.{hint}')
  return None
