"""A classifier's starting point: encoder params from a checkpoint, and a freshly drawn head.

Any checkpoint this package writes works (`mixmae_jax.load`): a MixMAE pretraining checkpoint,
whose encoder params (`patch_embed`, `layers_{i}`, `norm`) are the classifier's by name, or a
classifier (a converted official one, or an earlier fine-tuning). An encoder trained at another
input or window size (224/W14 -> 384/W16) is moved with `resolution.adapt_encoder`, which resizes
the relative position bias tables and records the grid the absolute embedding was made on.
"""
import dataclasses
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mixmae_jax import resolution
from mixmae_jax.architecture import SwinConfig

ENCODER_PARAMS = ('patch_embed', 'norm')  # plus every `layers_{i}`
_SHAPE_FIELDS = ('embed_dim', 'depths', 'num_heads', 'patch_size', 'in_chans', 'mlp_ratio',
                 'qkv_bias')


def encoder_params(params: Dict[str, Any]) -> Dict[str, Any]:
  """The encoder's share of a pretraining or classifier params tree."""
  return {k: v for k, v in params.items() if k in ENCODER_PARAMS or k.startswith('layers_')}


def load_encoder(path: str, encoder: SwinConfig) -> Tuple[Dict[str, Any], SwinConfig]:
  """(encoder params, encoder config to build with) from a checkpoint, for `encoder`'s shape.

  The returned config is `encoder`, with `pos_embed_grid` set when the checkpoint's input size
  differs (the absolute embedding is then the source grid's, resized as the official code does).
  Raises ValueError naming the field when widths, depths or heads differ.
  """
  from mixmae_jax.loading import load  # pylint: disable=import-outside-toplevel
  model, params = load(path)
  source = model.config.encoder
  for field in _SHAPE_FIELDS:
    if getattr(source, field) != getattr(encoder, field):
      raise ValueError(f'config.pretrained={path!r} has {field}={getattr(source, field)} but '
                       f'model.{field}={getattr(encoder, field)}: set the model fields to the '
                       f'checkpoint\'s architecture.')
  params = encoder_params(params)
  # The shift and drop-path settings are the fine-tuning config's to choose.
  source = dataclasses.replace(source, shifted_windows=encoder.shifted_windows,
                               drop_path_rate=encoder.drop_path_rate)
  if (source.img_size, source.window_sizes) != (encoder.img_size, encoder.window_sizes):
    params, encoder = resolution.adapt_encoder(params, source, encoder)
  else:
    encoder = dataclasses.replace(encoder, pos_embed_grid=source.pos_embed_grid)
  return jax.tree.map(jnp.asarray, params), encoder


def new_head(rng: jax.Array, num_features: int, num_classes: int,
             stddev: float) -> Dict[str, jax.Array]:
  """A linear head: kernel N(0, stddev^2), zero bias. Fine-tuning uses 2e-5 (MixMIM's
  main_finetune), linear probing 0.01 (MAE); timm's trunc_normal_ cuts at +-2 in absolute
  value, which never binds at these scales."""
  kernel = stddev * jax.random.normal(rng, (num_features, num_classes))
  return {'kernel': kernel.astype(jnp.float32), 'bias': jnp.zeros((num_classes,), jnp.float32)}


def check_matches(params: Dict[str, Any], reference: Dict[str, Any]) -> None:
  """Raise ValueError when loaded params do not have a freshly built model's shapes."""
  got = jax.tree_util.tree_flatten_with_path(params)[0]
  want = dict(jax.tree_util.tree_flatten_with_path(reference)[0])
  for path, x in got:
    if path not in want or np.shape(x) != np.shape(want[path]):
      raise ValueError(f'pretrained parameter {jax.tree_util.keystr(path)} of shape '
                       f'{np.shape(x)} does not fit the model.')
