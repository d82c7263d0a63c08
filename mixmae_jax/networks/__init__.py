"""Networks: the encoders, the shared ViT decoder, the classifier, and the layers they are made of.

**Encoder contract.** Each encoder family is one module of this package (`swin`, `vit`,
`ummae_swin`, `pvt`), found by its name (`encoder_module('vit')`), that exposes:

- `NAME`, `SIZES` (a small table), `config(size, **overrides)`, and `Config`: a frozen dataclass
  with `img_size`, `in_chans`, `num_features` and `problems()` (messages naming the field). The
  dataclass is the one declaration of the family's settings: a config's `model.encoder` entries
  are its fields (`encoder_fields`, `config_fields.as_fields`) and build it back
  (`encoder_config`);
- field values for `RUNLOCAL` (toy-size `:runlocal` runs), `DEMO` (the CPU demos),
  `CLASSIFIER_FIELDS` (what fine-tuning changes) and `PROBE_FIELDS` (what a linear probe
  changes on top);
- `Encoder(config, dtype, options)`: a Flax module; `__call__(images, train)` gives the final
  normalized tokens and `features(images, train)` the pooled features [B, F] a head reads;
- for generic code: `is_encoder_param(name)` (which top-level params are the encoder's),
  `SHAPE_FIELDS` (what a pretrained encoder fixes), `layer_id(names, config)` and
  `num_layer_ids(config)` (layer-wise lr decay), `NO_WEIGHT_DECAY` (fine-tuning exemptions;
  a family whose exemptions depend on the config also has `no_weight_decay(config)`),
  `SCANS_BLOCKS` (whether `model.scan_blocks` applies),
  `adapt(params, source, target)` (moving to another input size), `fixed_buffers(config)` (the
  official checkpoints' non-trainable tensors) and `forward_flops(config)`; optionally
  `features_config(config, param_names)` (the config whose `features` params lacking some
  fine-tuning entries can give, e.g. a pretraining ViT's without `fc_norm`).

`contract.py` declares the list as a `typing.Protocol`; `tests/test_contracts.py` checks every
family against it. Nothing here imports data, training or evaluation code.
"""
import dataclasses
import importlib
from types import ModuleType
from typing import Any, Dict, Mapping, Tuple

from mixmae_jax.networks import config_fields

# The modules of this package that are encoder families.
ENCODERS = ('swin', 'vit', 'ummae_swin', 'pvt')
# The only family there was when architecture records did not name theirs (record format 1).
FIRST_ENCODER = 'swin'


def encoder_module(name: str) -> ModuleType:
  """The module of an encoder family, by name."""
  if name not in ENCODERS:
    raise ValueError(f'unknown encoder {name!r}: use one of {", ".join(ENCODERS)}.')
  return importlib.import_module(f'mixmae_jax.networks.{name}')


def encoder_fields(name: str, size: str) -> Any:
  """`model.encoder` of a config: `name` and every field of the family's Config of `size`."""
  return config_fields.as_fields(encoder_module(name).config(size), name)


def encoder_config(fields) -> Any:
  """The frozen encoder config of a config's `model.encoder` fields."""
  return config_fields.from_fields(encoder_module(fields.name).Config, fields)


def encoder_to_dict(config) -> Dict[str, Any]:
  """A JSON-ready record of an encoder config, with its family name."""
  return {'name': config.name, **dataclasses.asdict(config)}


def encoder_from_dict(record: Mapping[str, Any]) -> Any:
  """Inverse of `encoder_to_dict` (older records are upgraded by `architectures.upgrade`)."""
  record = dict(record)
  module = encoder_module(record.pop('name'))
  return build_dataclass(module.Config, record)


def build_dataclass(cls: type, record: Mapping[str, Any]) -> Any:
  """A frozen dataclass from a JSON record: lists become tuples, nested dataclasses recurse,
  unknown keys are refused and missing ones take their defaults."""
  names = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(record) - set(names))
  if unknown:
    raise ValueError(f'{cls.__name__} has no fields {unknown}.')
  kwargs = {}
  for key, value in record.items():
    default = names[key].default
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
      value = build_dataclass(type(default), value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[key] = value
  return cls(**kwargs)


def no_weight_decay(config) -> frozenset:
  """Param names fine-tuning exempts from weight decay (besides 1-D params) for an encoder."""
  module = encoder_module(config.name)
  by_config = getattr(module, 'no_weight_decay', None)
  return frozenset(by_config(config)) if by_config else module.NO_WEIGHT_DECAY


def adapt_encoder(params: Dict[str, Any], source, target) -> Tuple[Dict[str, Any], Any]:
  """Encoder params and config moved from `source` to `target` (another input size, window
  size, pooling or position-embedding kind of the same family and shape)."""
  if source.name != target.name:
    raise ValueError(f'cannot move a {source.name} encoder into a {target.name} one.')
  return encoder_module(target.name).adapt(params, source, target)
