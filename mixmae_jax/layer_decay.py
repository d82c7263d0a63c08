"""Layer-wise learning-rate decay (BEiT/MixMIM) for fine-tuning a Swin classifier.

Every parameter gets a layer id from its path, as the official `get_layer_id_for_mixmim` does:
- `patch_embed` -> 0;
- block j of stage s (`layers_{s}/blocks_{j}`) -> sum(depths[:s]) + j + 1;
- a stage's patch merging (`layers_{s}/downsample`) -> sum(depths[:s + 1]) + 1, the id of the next
  stage's first block;
- everything else (final `norm`, `head`) -> sum(depths), the id of the last block.
Its learning rate is scaled by `layer_decay ** (sum(depths) + 1 - id)`, so the head and the last
block train at `layer_decay` times the base rate (not 1x) and the patch embedding at
`layer_decay ** (sum(depths) + 1)`. As in PyTorch param groups, the scale multiplies the whole
AdamW step, decoupled weight decay included.
"""
from typing import Any, Callable, Sequence, Tuple

import jax
import optax

from mixmae_jax.optimizer import adamw


def _names(path) -> Tuple[str, ...]:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def layer_id(names: Sequence[str], depths: Sequence[int]) -> int:
  """The official layer id of a parameter at `names` (e.g. ('layers_2', 'blocks_5', ...))."""
  top = names[0]
  if top == 'patch_embed':
    return 0
  if top.startswith('layers_'):
    stage = int(top[len('layers_'):])
    if names[1] == 'downsample':
      return sum(depths[:stage + 1]) + 1
    block = int(names[1][len('blocks_'):])
    return sum(depths[:stage]) + block + 1
  return sum(depths)


def layer_scale(layer: int, depths: Sequence[int], decay: float) -> float:
  """decay ** (sum(depths) + 1 - layer): 1 would be id sum(depths) + 1, which no parameter has."""
  return float(decay)**(sum(depths) + 1 - layer)


def layer_labels(params: Any, depths: Sequence[int]) -> Any:
  """A pytree like `params` of 'layer_{id}' labels."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: f'layer_{layer_id(_names(path), depths)}', params)


def layer_scales(params: Any, depths: Sequence[int], decay: float) -> Any:
  """A pytree like `params` of each parameter's learning-rate scale."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: layer_scale(layer_id(_names(path), depths), depths, decay), params)


def scale_by_layer(params: Any, depths: Sequence[int],
                   decay: float) -> optax.GradientTransformation:
  """Multiply each parameter's update by its layer's scale (one optax.scale per layer id)."""
  if decay == 1.0:
    return optax.identity()
  ids = range(sum(depths) + 1)
  transforms = {f'layer_{i}': optax.scale(layer_scale(i, depths, decay)) for i in ids}
  return optax.multi_transform(transforms, layer_labels(params, depths))


def layer_decayed_adamw(learning_rate: Callable[[Any], Any], params: Any, depths: Sequence[int],
                        *, layer_decay: float, weight_decay: float, b1: float, b2: float,
                        grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """The fine-tuning optimizer: the recipe's AdamW (decay on >= 2-D weights), layer-scaled.

  Scaling the finished AdamW step equals PyTorch's per-group lr, which multiplies the Adam
  direction and the decoupled decay alike.
  """
  return optax.chain(
      adamw(learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, grad_clip_norm=grad_clip_norm),
      scale_by_layer(params, depths, layer_decay))
