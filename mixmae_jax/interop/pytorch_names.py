"""Mechanical mapping between official PyTorch state dicts and our params pytrees.

Names match module for module; only the spelling differs: `layers.0.blocks.1.attn.qkv.weight`
is `layers_0/blocks_1/attn/qkv/kernel`. Linear weights are transposed, conv kernels go from
[out, in, kh, kw] to [kh, kw, in, out], and LayerNorm `weight` is `scale`. The official models
also carry fixed buffers (sin-cos tables, relative position indices) that we recompute; they are
dropped on the way in (after checking them) and regenerated on the way out. Which buffers an
architecture has is its objective's or encoder family's to say (`fixed_buffers`).
Torch itself is only imported by `convert.py`, which reads and writes `.pth` files.
"""
import re
from typing import Dict, Mapping, Tuple

import numpy as np

from mixmae_jax import architectures, networks, objectives

_INDEXED = re.compile(r'^(layers|blocks|decoder_blocks)$')
_INDEXED_FLAX = re.compile(r'^(layers|blocks|decoder_blocks)_(\d+)$')


def _flax_path(torch_key: str, ndim: int) -> Tuple[str, ...]:
  path = []
  for part in torch_key.split('.'):
    if part.isdigit() and path and _INDEXED.match(path[-1]):
      path[-1] = f'{path[-1]}_{part}'
    else:
      path.append(part)
  if path[-1] == 'weight':
    path[-1] = 'scale' if ndim == 1 else 'kernel'
  return tuple(path)


def _torch_key(path: Tuple[str, ...]) -> str:
  parts = []
  for p in path:
    m = _INDEXED_FLAX.match(p)
    parts.extend([m.group(1), m.group(2)] if m else [p])
  if parts[-1] in ('scale', 'kernel'):
    parts[-1] = 'weight'
  return '.'.join(parts)


def _to_flax_value(path: Tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == 'kernel' and value.ndim == 2:
    return value.T
  if path[-1] == 'kernel' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value


def _to_torch_value(path: Tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == 'kernel' and value.ndim == 2:
    return value.T
  if path[-1] == 'kernel' and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  return value


def fixed_buffers(arch) -> Dict[str, np.ndarray]:
  """The non-trainable tensors an official model of this architecture carries."""
  kind = architectures.kind(arch)
  if kind == 'pretraining':
    return objectives.objective_module(arch.objective).fixed_buffers(arch)
  encoder = arch.encoder if kind == 'classifier' else arch
  return networks.encoder_module(encoder.name).fixed_buffers(encoder)


def buffer_difference(key: str, got: np.ndarray, want: np.ndarray) -> str:
  """How a fixed buffer read from a file differs from the architecture's ('' when it does
  not, to 1e-5)."""
  if got.shape != want.shape:
    return (f'{key} in the checkpoint has shape {got.shape}, the architecture\'s '
            f'{want.shape}')
  if np.allclose(want, got, atol=1e-5):
    return ''
  diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
  return (f'{key} in the checkpoint (shape {got.shape}) has the architecture\'s shape but '
          f'other values: {int(np.sum(diff > 1e-5))} of {diff.size} differ, by up to '
          f'{float(np.max(diff)):.3g}')


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], arch) -> Dict:
  """Official state dict (numpy values) -> our nested params dict.

  Raises ValueError if a fixed buffer in the file disagrees with the architecture (e.g. a 384
  checkpoint read as 224), since that means the model would silently compute something else.
  """
  buffers = fixed_buffers(arch)
  params: Dict = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    if key in buffers:
      problem = buffer_difference(key, value, buffers[key])
      if problem:
        raise ValueError(f'{problem}: check --arch and img_size.')
      continue
    node = params
    path = _flax_path(key, value.ndim)
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = _to_flax_value(path, value).astype(np.float32)
  return params


def _leaves(tree: Mapping, path=()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, path + (k,))
    else:
      yield path + (k,), v


def expected_shapes(abstract_params: Mapping, arch) -> Dict[str, Tuple[int, ...]]:
  """Every key an official state dict of this architecture holds, with its shape."""
  out = {}
  for path, leaf in _leaves(abstract_params):
    shape = tuple(leaf.shape)
    if path[-1] == 'kernel' and len(shape) == 2:
      shape = shape[::-1]
    elif path[-1] == 'kernel' and len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])
    out[_torch_key(path)] = shape
  out.update({k: tuple(v.shape) for k, v in fixed_buffers(arch).items()})
  return out


def state_dict_from_params(params: Mapping, arch) -> Dict[str, np.ndarray]:
  """Our params -> an official state dict (numpy), fixed buffers included."""
  out: Dict[str, np.ndarray] = {}
  for path, value in _leaves(params):
    value = np.asarray(value, np.float32)
    out[_torch_key(path)] = _to_torch_value(path, value)
  out.update(fixed_buffers(arch))
  return out
