"""A config's `model.encoder` / `model.objective` entries, derived from one dataclass declaration.

An encoder family or an objective declares its settings once, as a frozen dataclass with the
recipe's defaults (`vit.ViTConfig`, `mae.MAEConfig`, ...). `as_fields` gives the config entries:
`name`, then every field, so every setting a model has can be set from the command line
(`--config.model.encoder.qkv_bias=false`); a nested dataclass (an objective's `decoder`) is
flattened with its name as prefix (`decoder_dim`, `decoder_depth`, ...), the names published
commands use. `from_fields` builds the dataclass back: entries missing from an older config take
the field's default, lists become tuples, and nested dataclasses are rebuilt from their prefix.
"""
import dataclasses
from typing import Any, Dict, Mapping

import ml_collections


def _plain(value: Any) -> Any:
  return tuple(value) if isinstance(value, list) else value


def as_fields(config: Any, name: str, skip=('encoder',)) -> ml_collections.ConfigDict:
  """`name`, then each field of the dataclass instance `config` (nested ones flattened)."""
  out: Dict[str, Any] = {'name': name}
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if f.name in skip:
      continue
    if dataclasses.is_dataclass(value):
      out.update({f'{f.name}_{g.name}': getattr(value, g.name) for g in dataclasses.fields(value)})
    else:
      out[f.name] = value
  return ml_collections.ConfigDict(out)


def from_fields(cls: type, fields: Mapping[str, Any], **given: Any) -> Any:
  """An instance of `cls` from config entries (see `as_fields`), plus `given` fields as they are.

  An entry that is absent (a config written before its field existed) takes the default."""
  kwargs = dict(given)
  for f in dataclasses.fields(cls):
    if f.name in given or not f.init:
      continue
    default = f.default
    if dataclasses.is_dataclass(default):
      kwargs[f.name] = dataclasses.replace(default, **{
          g.name: _plain(fields[f'{f.name}_{g.name}']) for g in dataclasses.fields(default)
          if f'{f.name}_{g.name}' in fields})
    elif f.name in fields:
      kwargs[f.name] = _plain(fields[f.name])
  return cls(**kwargs)
