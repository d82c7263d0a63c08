"""Linear probing (MAE protocol): a linear head on the frozen encoder's pooled features.

MAE puts a BatchNorm without affine parameters before the head and trains at batch 16384, where
a batch's statistics are the population's; here the pooled features are standardized with the
mean and variance measured once, before training, on `probe.norm_examples` augmented training
images (the same parameter-free norm, with no running statistics to carry). The head starts at
N(0, 0.01^2) and trains with LARS (MAE) or SGD with momentum, no weight decay by default.

The probe's params are {'encoder': classifier params (frozen), 'head', 'feature_mean',
'feature_std'}; only 'head' is optimized. A saved probe is a plain classifier checkpoint: the
standardization is folded into the head (`fold_into_classifier`), so `mixmae_jax.load` on a probe
workdir gives a Classifier with the probe's predictions. The unfolded head and the statistics
travel in the checkpoint's optimizer-state item, so a resumed probe continues bit for bit.
"""
from typing import Any, Callable, Dict, Iterable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixmae_jax.data import pixels
from mixmae_jax.evaluation.accuracy import sum_over_batches
from mixmae_jax.networks.classifier import Classifier
from mixmae_jax.training.train_step import AXIS

_EPS = 1e-6  # MAE's BatchNorm1d eps


def features_fn(model: Classifier) -> Callable:
  """(classifier params, normalized images [B, H, W, 3]) -> pooled features [B, F], eval mode."""
  return lambda params, images: model.apply({'params': params}, images, False,
                                            method=Classifier.features)


def probe_logits_fn(model: Classifier) -> Callable:
  """`logits_fn(params, images, train, rngs)` of a probe (see the module docstring)."""
  features = features_fn(model)

  def logits_fn(params, images, train, rngs):
    del train, rngs  # the encoder is frozen, in eval mode
    x = (features(params['encoder'], images) - params['feature_mean']) / params['feature_std']
    return x @ params['head']['kernel'] + params['head']['bias']

  return logits_fn


def make_feature_moments_step(model: Classifier, *, pixel_mean, pixel_std,
                              axis_name: str = AXIS) -> Callable:
  """`step(params, batch) -> (sum, sum of squares [F], count)` of pooled features, over devices."""
  features = features_fn(model)

  def step(params, batch):
    x = features(params, pixels.normalize(batch['image'], pixel_mean, pixel_std))
    x = x.astype(jnp.float32)
    sums = (jnp.sum(x, 0), jnp.sum(x * x, 0), jnp.asarray(x.shape[0], jnp.float32))
    return jax.lax.psum(sums, axis_name)

  return step


def feature_statistics(p_moments_step: Callable, params: Any,
                       batches: Iterable[Dict[str, np.ndarray]]) -> Tuple[jax.Array, jax.Array]:
  """(mean, std) [F] of the pooled features over `batches`; `params` replicated."""
  total, squares, count = [x.astype(np.float64)
                           for x in sum_over_batches(p_moments_step, params, batches)]
  mean = total / count
  var = np.maximum(squares / count - mean * mean, 0.0)
  return jnp.asarray(mean, jnp.float32), jnp.asarray(np.sqrt(var + _EPS), jnp.float32)


def fold_into_classifier(params: Dict[str, Any]) -> Dict[str, Any]:
  """Classifier params whose head computes the probe's logits from raw pooled features."""
  head, mean, std = params['head'], params['feature_mean'], params['feature_std']
  kernel = head['kernel'] / std[:, None]
  return {**params['encoder'], 'head': {'kernel': kernel, 'bias': head['bias'] - mean @ kernel}}


def to_checkpoint(params: Dict[str, Any], opt_state: Any) -> Tuple[Any, Any]:
  """What a probe saves: (classifier params, {'tx', 'head', 'feature_mean', 'feature_std'})."""
  extras = {k: params[k] for k in ('head', 'feature_mean', 'feature_std')}
  return fold_into_classifier(params), {'tx': opt_state, **extras}


def from_checkpoint(params: Any, opt_state: Any) -> Tuple[Dict[str, Any], Any]:
  """Inverse of `to_checkpoint`: (probe params, optimizer state)."""
  extras = {k: opt_state[k] for k in ('head', 'feature_mean', 'feature_std')}
  return {'encoder': params, **extras}, opt_state['tx']


def probe_optimizer(name: str, learning_rate: Callable[[Any], Any], *, momentum: float,
                    weight_decay: float) -> optax.GradientTransformation:
  """LARS as in MAE (trust ratio and decay on the weight matrix only) or SGD with momentum."""
  if name == 'lars':
    matrices = lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree)  # noqa: E731
    return optax.lars(learning_rate, weight_decay=weight_decay, weight_decay_mask=matrices,
                      trust_ratio_mask=matrices, momentum=momentum)
  if name == 'sgd':
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum))
  raise ValueError(f'probe.optimizer={name!r}: use lars or sgd.')
