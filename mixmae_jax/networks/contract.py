"""The encoder-family contract as a checked declaration (`EncoderFamily`), and `problems(module)`
saying what a family module lacks; `tests/test_contracts.py` checks every registered family.
The prose of each item is in `networks/__init__.py`."""
from types import ModuleType
from typing import Any, Dict, List, Mapping, Protocol, Sequence, Tuple


class EncoderFamily(Protocol):
  """What generic code (training, fine-tuning, conversion, benchmarks) asks of an encoder
  family's module."""
  NAME: str
  SIZES: Mapping[str, Any]
  Config: type
  Encoder: type
  RUNLOCAL: Mapping[str, Any]
  DEMO: Mapping[str, Any]
  CLASSIFIER_FIELDS: Mapping[str, Any]
  PROBE_FIELDS: Mapping[str, Any]
  SHAPE_FIELDS: Tuple[str, ...]
  NO_WEIGHT_DECAY: frozenset
  SCANS_BLOCKS: bool

  def config(self, size: str, **overrides) -> Any: ...
  def is_encoder_param(self, name: str) -> bool: ...
  def layer_id(self, names: Sequence[str], config) -> int: ...
  def num_layer_ids(self, config) -> int: ...
  def adapt(self, params: Dict[str, Any], source, target) -> Tuple[Dict[str, Any], Any]: ...
  def fixed_buffers(self, config) -> Dict[str, Any]: ...
  def forward_flops(self, config) -> Dict[str, float]: ...


def declared(protocol: type) -> Tuple[List[str], List[str]]:
  """(attribute names, method names) a Protocol class declares."""
  attributes = [n for n in getattr(protocol, '__annotations__', {}) if not n.startswith('_')]
  methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith('_')]
  return attributes, methods


def missing(module: ModuleType, protocol: type) -> List[str]:
  """What `module` lacks of `protocol`: absent names, and declared methods that are not
  callable."""
  attributes, methods = declared(protocol)
  out = [f'{module.__name__} has no {n}' for n in attributes + methods if not hasattr(module, n)]
  out += [f'{module.__name__}.{n} is not callable' for n in methods
          if hasattr(module, n) and not callable(getattr(module, n))]
  return out


def problems(module: ModuleType) -> List[str]:
  """Everything `module` lacks or gets wrong of the encoder-family contract ([] when whole)."""
  out = missing(module, EncoderFamily)
  if out:
    return out
  config = module.config(next(iter(module.SIZES)))
  for field in ('img_size', 'in_chans', 'num_features'):
    if not hasattr(config, field):
      out.append(f'{module.NAME}.Config has no {field}')
  if not callable(getattr(config, 'problems', None)):
    out.append(f'{module.NAME}.Config has no problems()')
  for field in module.SHAPE_FIELDS:
    if not hasattr(config, field):
      out.append(f'{module.NAME}.SHAPE_FIELDS names {field}, which Config lacks')
  return out
