"""A classifier's starting point: encoder params from a checkpoint, and a freshly drawn head.

Any checkpoint this package writes or converts works (`mixmae_jax.load`): a pretraining
checkpoint of any objective, whose encoder params are the classifier's by name, an encoder-only
one, or a classifier (a converted official one, or an earlier fine-tuning). The encoder family's
`adapt` moves the params to the fine-tuning config's input size, windows and position table (a
224/W14 Swin into the 384/W16 classifier; a fixed sin-cos ViT table into a learned one).
"""
import logging
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax import architectures, networks
from mixmae_jax.training.config_checks import ConfigError

log = logging.getLogger(__name__)


def encoder_params(params: Dict[str, Any], encoder) -> Dict[str, Any]:
  """The encoder's share of a pretraining or classifier params tree."""
  module = networks.encoder_module(encoder.name)
  return {k: v for k, v in params.items() if module.is_encoder_param(k)}


def load_encoder(path: str, wanted) -> Tuple[Dict[str, Any], Any]:
  """(encoder params, encoder config to build with) from a checkpoint, for `wanted`'s shape.

  The returned config is `wanted` as the family's `adapt` leaves it (e.g. Swin's
  `pos_embed_grid` when the checkpoint's input size differs). Raises ConfigError naming the field
  when the family or a shape field (width, depth, heads, patch) differs.
  """
  from mixmae_jax.interop.loading import load  # pylint: disable=import-outside-toplevel
  model, params = load(path)
  arch = model.config
  source = arch if architectures.kind(arch) == 'encoder' else arch.encoder
  if source.name != wanted.name:
    raise ConfigError(f'config.pretrained={path!r} holds a {source.name} encoder but '
                     f'model.encoder.name={wanted.name!r}: set the model fields to the '
                     f'checkpoint\'s architecture.')
  module = networks.encoder_module(wanted.name)
  for field in module.SHAPE_FIELDS:
    if getattr(source, field) != getattr(wanted, field):
      raise ConfigError(f'config.pretrained={path!r} has {field}={getattr(source, field)} but '
                       f'model.encoder.{field}={getattr(wanted, field)}: set the model fields to '
                       f'the checkpoint\'s architecture.')
  params, encoder = module.adapt(encoder_params(params, source), source, wanted)
  return jax.tree.map(jnp.asarray, params), encoder


def merge_encoder(fresh: Dict[str, Any], encoder: Dict[str, Any]) -> Dict[str, Any]:
  """A freshly initialised model's params with the pretrained encoder's put in by name.

  Pretrained entries the model lacks are left out (MAE's `norm` under a global-pool head); the
  model's entries the checkpoint lacks keep their fresh values (`fc_norm`, the head); a shape
  that differs is an error naming the parameter.
  """
  shared = sorted(set(fresh) & set(encoder))
  want = dict(jax.tree_util.tree_flatten_with_path({k: fresh[k] for k in shared})[0])
  got = dict(jax.tree_util.tree_flatten_with_path({k: encoder[k] for k in shared})[0])
  for path in sorted(set(want) | set(got), key=jax.tree_util.keystr):
    if path not in want or path not in got or np.shape(got[path]) != np.shape(want[path]):
      shape = np.shape(got[path]) if path in got else 'missing'
      raise ConfigError(f'pretrained parameter {jax.tree_util.keystr(path)} ({shape}) does not '
                        f'fit the model.')
  dropped = sorted(set(encoder) - set(fresh))
  fresh_only = sorted(set(fresh) - set(encoder) - {'head'})
  if dropped or fresh_only:
    log.info('pretrained encoder: not used %s; newly initialised %s', dropped or 'none',
             fresh_only or 'none')
  return {**fresh, **{k: v for k, v in encoder.items() if k in fresh}}


def new_head(rng: jax.Array, num_features: int, num_classes: int,
             stddev: float) -> Dict[str, jax.Array]:
  """A linear head: kernel N(0, stddev^2), zero bias. Fine-tuning uses 2e-5 (MixMIM's and MAE's
  main_finetune), linear probing 0.01 (MAE); timm's trunc_normal_ cuts at +-2 in absolute
  value, which never binds at these scales."""
  kernel = stddev * jax.random.normal(rng, (num_features, num_classes))
  return {'kernel': kernel.astype(jnp.float32), 'bias': jnp.zeros((num_classes,), jnp.float32)}
