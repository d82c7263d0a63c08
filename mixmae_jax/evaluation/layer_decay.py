"""Layer-wise learning-rate decay (BEiT, MixMIM, MAE) for fine-tuning any encoder.

Every parameter gets a layer id from its path by the encoder family's rule (`layer_id` of
`networks/swin.py` or `networks/vit.py`, the official `get_layer_id_for_mixmim` and
`get_layer_id_for_vit`), and its learning rate is scaled by
`layer_decay ** (num_layer_ids - id)`: for MixMIM's Swin the head and the last block train at
`layer_decay` times the base rate and the patch embedding at `layer_decay ** (sum(depths) + 1)`;
for ViT, UM-MAE's Swin, PVT and SimMIM's Swin the head trains at the full rate. As in PyTorch
param groups, the scale multiplies the whole AdamW step, decoupled weight decay included.
"""
from typing import Any, Callable, Tuple

import jax
import optax

from mixmae_jax import networks
from mixmae_jax.training.optimizer import adamw


def _names(path) -> Tuple[str, ...]:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def layer_scale(layer: int, num_layers: int, decay: float) -> float:
  """decay ** (num_layers - layer)."""
  return float(decay)**(num_layers - layer)


def layer_labels(params: Any, encoder) -> Any:
  """A pytree like `params` of 'layer_{id}' labels, by the encoder family's rule."""
  module = networks.encoder_module(encoder.name)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: f'layer_{module.layer_id(_names(path), encoder)}', params)


def layer_scales(params: Any, encoder, decay: float) -> Any:
  """A pytree like `params` of each parameter's learning-rate scale."""
  module = networks.encoder_module(encoder.name)
  num_layers = module.num_layer_ids(encoder)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: layer_scale(module.layer_id(_names(path), encoder), num_layers, decay),
      params)


def scale_by_layer(params: Any, encoder, decay: float) -> optax.GradientTransformation:
  """Multiply each parameter's update by its layer's scale (one optax.scale per layer id)."""
  if decay == 1.0:
    return optax.identity()
  num_layers = networks.encoder_module(encoder.name).num_layer_ids(encoder)
  labels = layer_labels(params, encoder)
  # One transform per id that a parameter has (the optimizer state's layout depends on it).
  ids = sorted({int(label[len('layer_'):]) for label in jax.tree.leaves(labels)})
  transforms = {f'layer_{i}': optax.scale(layer_scale(i, num_layers, decay)) for i in ids}
  return optax.multi_transform(transforms, labels)


def layer_decayed_adamw(learning_rate: Callable[[Any], Any], params: Any, encoder, *,
                        layer_decay: float, weight_decay: float, b1: float, b2: float,
                        grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """The fine-tuning optimizer: AdamW (decay on >= 2-D weights but the encoder family's
  exemptions), layer-scaled. Scaling the finished AdamW step equals PyTorch's per-group lr,
  which multiplies the Adam direction and the decoupled decay alike."""
  exempt = networks.no_weight_decay(encoder)
  return optax.chain(
      adamw(learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, grad_clip_norm=grad_clip_norm,
            no_decay_names=exempt),
      scale_by_layer(params, encoder, layer_decay))
