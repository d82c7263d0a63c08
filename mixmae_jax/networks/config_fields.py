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
from typing import Any, Dict, List, Mapping, Tuple

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


def sized(cls: type, sizes: Mapping[str, tuple], keys: Tuple[str, ...], size: str, family: str,
          overrides: Mapping[str, Any]) -> Any:
  """`cls` of a named size: `sizes[size]` gives the values of `keys`; any field overridden."""
  if size not in sizes:
    raise ValueError(f'unknown {family} size {size!r}; choose one of {sorted(sizes)}.')
  return cls(**{**dict(zip(keys, sizes[size])), **overrides})


# Where a pyramid encoder's pooled features come from: the fine-tuning `fc_norm` or the final
# `norm` the pretraining trained (what a probe reads).
HEAD_NORMS = ('fc_norm', 'norm')


def pyramid_problems(img_size: int, stride: int, widths, heads, head_norm: str) -> List[str]:
  """The checks every pyramid encoder shares: the input splits into the last stage's grid, each
  stage's heads divide its width, and the head norm is a known one."""
  if img_size % stride:
    return [f'img_size={img_size} is not a multiple of the encoder stride {stride}: use e.g. '
            f'{max(1, img_size // stride) * stride}.']
  out = [f'num_heads[{s}]={h} does not divide the stage-{s} width {w}.'
         for s, (w, h) in enumerate(zip(widths, heads)) if w % h]
  if head_norm not in HEAD_NORMS:
    out.append(f'head_norm={head_norm!r}: use fc_norm (fine-tuning) or norm (the pretrained '
               f'final norm, for probes).')
  return out
