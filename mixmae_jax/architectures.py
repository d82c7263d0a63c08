"""Architecture records: every model this package builds, as JSON-ready data and back.

A checkpoint stores `to_dict(arch)`, so a model can be rebuilt from a checkpoint alone
(`from_dict`, `build_model`). Three kinds:
- 'pretraining': an objective's Config (`objectives/`), named by `objective`;
- 'classifier': `networks.classifier.ClassifierConfig` (fine-tuning, probing);
- 'encoder': an encoder family's Config alone (e.g. an encoder-only official checkpoint).
Encoders are records with their family `name`. Every record carries `format` (RECORD_FORMAT);
`upgrade` is the one place that reads older formats as today's.
"""
import dataclasses
from typing import Any, Dict, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixmae_jax import networks, objectives
from mixmae_jax.networks.classifier import Classifier, ClassifierConfig
from mixmae_jax.networks.compute_options import ComputeOptions

# 1: the first records (kind = the objective's name, encoders unnamed: all of the first family,
#    `networks.FIRST_ENCODER`);
# 2: kind 'pretraining' / 'classifier' / 'encoder', `objective` and encoder `name` recorded.
# Records without `format` are read as 1; for those already in format 2's shape (written before
# the field existed) the upgrade changes nothing.
RECORD_FORMAT = 2


def upgrade(record: Mapping[str, Any]) -> Dict[str, Any]:
  """A record of any format as a record of RECORD_FORMAT."""
  record = dict(record)
  version = record.pop('format', 1)
  if version > RECORD_FORMAT:
    raise ValueError(f'an architecture record of format {version}, newer than this package '
                     f'reads ({RECORD_FORMAT}): upgrade mixmae_jax.')
  if version == 1:
    if record['kind'] in objectives.OBJECTIVES:
      record['kind'], record['objective'] = 'pretraining', record['kind']
    record['encoder'] = {'name': networks.FIRST_ENCODER, **record['encoder']}
  return record


def kind(arch) -> str:
  if isinstance(arch, ClassifierConfig):
    return 'classifier'
  return 'pretraining' if hasattr(arch, 'objective') else 'encoder'


def _plain(config) -> Dict[str, Any]:
  """asdict, with every nested encoder recorded under its family name."""
  out = {}
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if f.name == 'encoder':
      out[f.name] = networks.encoder_to_dict(value)
    elif dataclasses.is_dataclass(value):
      out[f.name] = dataclasses.asdict(value)
    else:
      out[f.name] = value
  return out


def to_dict(arch) -> Dict[str, Any]:
  """A JSON-ready description of an architecture, with its kind."""
  k = kind(arch)
  if k == 'encoder':
    return {'format': RECORD_FORMAT, 'kind': k, 'encoder': networks.encoder_to_dict(arch)}
  record = {'format': RECORD_FORMAT, 'kind': k, **_plain(arch)}
  if k == 'pretraining':
    record['objective'] = arch.objective
  return record


def from_dict(record: Mapping[str, Any]):
  """Inverse of `to_dict`, for records of every format (`upgrade`)."""
  record = upgrade(record)
  k = record.pop('kind')
  if k == 'encoder':
    return networks.encoder_from_dict(record['encoder'])
  encoder = networks.encoder_from_dict(record.pop('encoder'))
  if k == 'classifier':
    return ClassifierConfig(encoder=encoder, num_classes=record['num_classes'])
  if k != 'pretraining':
    raise ValueError(f'unknown architecture kind {k!r}.')
  module = objectives.objective_module(record.pop('objective'))
  # an objective that renamed a field reads its older records (`upgrade_record`)
  record = getattr(module, 'upgrade_record', lambda r: r)(record)
  return dataclasses.replace(networks.build_dataclass(module.Config, record), encoder=encoder)


def build_model(arch, dtype=jnp.float32, options: ComputeOptions = ComputeOptions()) -> nn.Module:
  """The Flax module of an architecture: an objective's model, a classifier or an encoder."""
  k = kind(arch)
  if k == 'pretraining':
    return objectives.objective_module(arch.objective).Model(arch, dtype=dtype, options=options)
  if k == 'classifier':
    return Classifier(arch, dtype=dtype, options=options)
  return networks.encoder_module(arch.name).Encoder(arch, dtype=dtype, options=options)


def image_size(arch) -> int:
  return (arch if kind(arch) == 'encoder' else arch.encoder).img_size


def init_batch_size(arch) -> int:
  """The smallest batch a model can be initialised with (an objective may group images)."""
  if kind(arch) != 'pretraining':
    return 2
  return max(2, objectives.objective_module(arch.objective).batch_multiple(arch)[0])


def abstract_params(model: nn.Module) -> Any:
  """Shapes and dtypes of a model's params, computed without allocating them."""
  arch = model.config
  size = image_size(arch)
  rngs = {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(0)}
  images = jnp.zeros((init_batch_size(arch), size, size, 3))
  return jax.eval_shape(lambda: model.init(rngs, images))['params']


def check(arch, what: str = '') -> None:
  """Raise ValueError listing every problem of an architecture."""
  problems = arch.problems()
  if problems:
    raise ValueError('\n  '.join([f'invalid {what or type(arch).__name__}:'] + problems))
