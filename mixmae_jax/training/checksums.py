"""Checksums of checkpointed arrays, and the checks a restore runs on what it read.

A checkpoint's meta records, for every array, a 32-bit position-weighted sum of its bits (not a
CRC): computed where the array lies, so a sharded array is summed slice by slice and nothing is
gathered; damage that changes or moves values changes it. `problems` compares restored arrays
with the record and looks for non-finite params.
"""
import zlib
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN, _MIX = 0x9E3779B1, 0x85EBCA6B


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def _canonical(dtype) -> np.dtype:
  """The dtype an array has on the devices (64-bit types narrow unless x64 is on)."""
  return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _device_fingerprint(x: jax.Array) -> jax.Array:
  """uint32 checksum of an array on its devices."""
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = x.dtype.itemsize
  if size in (1, 2):
    words = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size])
    words = words.astype(jnp.uint32)
  else:
    words = jax.lax.bitcast_convert_type(x, jnp.uint32)
  words = words.reshape(-1)
  index = jnp.arange(words.shape[0], dtype=jnp.uint32)
  return jnp.sum((words ^ (index * jnp.uint32(_GOLDEN))) * jnp.uint32(_MIX), dtype=jnp.uint32)


def _host_fingerprint(x: np.ndarray) -> int:
  """`_device_fingerprint` of a host array, in numpy (the same arithmetic, wrapping at 2^32)."""
  x = np.ascontiguousarray(np.asarray(x).astype(_canonical(np.asarray(x).dtype)))
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  if x.dtype.itemsize in (1, 2):
    words = x.view({1: np.uint8, 2: np.uint16}[x.dtype.itemsize]).astype(np.uint32).reshape(-1)
  else:
    words = x.view(np.uint32).reshape(-1)
  index = np.arange(words.shape[0], dtype=np.uint32)
  with np.errstate(over='ignore'):
    return int(np.sum((words ^ (index * np.uint32(_GOLDEN))) * np.uint32(_MIX), dtype=np.uint32))


_device_fingerprints = jax.jit(lambda leaves: [_device_fingerprint(x) for x in leaves])


def array_checksums(tree: Any) -> Dict[str, str]:
  """'sum32:<hex> <dtype> <shape>' of every array of a pytree (host arrays, or device arrays
  whole or sharded, summed where they lie), by its path ('a/b/kernel')."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  on_devices = [i for i, (_, leaf) in enumerate(flat) if isinstance(leaf, jax.Array)]
  sums = dict(zip(on_devices, jax.device_get(_device_fingerprints(
      [flat[i][1] for i in on_devices])) if on_devices else []))
  out = {}
  for i, (path, leaf) in enumerate(flat):
    value = int(sums[i]) if i in sums else _host_fingerprint(leaf)
    out[_path_name(path)] = (f'sum32:{value:08x} {_canonical(np.dtype(leaf.dtype))} '
                             f'{list(np.shape(leaf))}')
  return out


def _crc32_checksums(tree: Any) -> Dict[str, str]:
  """The 'crc32:...' records that checkpoints carried before the checksums were summed on the
  devices (host arrays only); a record says which kind it is by its prefix."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    x = np.ascontiguousarray(np.asarray(leaf))
    crc = zlib.crc32(memoryview(x).cast('B')) if x.size else 0
    out[_path_name(path)] = f'crc32:{crc:08x} {x.dtype} {list(x.shape)}'
  return out


def damaged_arrays(tree: Any, recorded: Dict[str, str]) -> List[str]:
  """Paths of the arrays whose checksum, dtype or shape differ from the recorded ones."""
  older = any(v.startswith('crc32:') for v in recorded.values())
  actual = _crc32_checksums(tree) if older else array_checksums(tree)
  return sorted(name for name in set(actual) | set(recorded)
                if actual.get(name) != recorded.get(name))


@jax.jit
def _finite(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
                      else jnp.bool_(True), tree)


def nonfinite_arrays(tree: Any) -> List[str]:
  """Paths of the floating-point arrays holding a NaN or an infinity."""
  finite = jax.device_get(_finite(tree))
  return sorted(_path_name(path) for (path, _), ok in
                zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(finite))
                if not ok)


def _listing(names: List[str], limit: int = 5) -> str:
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def problems(arrays: Dict[str, Any], meta: Dict[str, Any]) -> str:
  """What is wrong with restored `arrays` ({'params': ..., 'opt_state': ...}) against the
  checksums `meta` records: damaged arrays, or (for params) non-finite values; '' if nothing.
  Checkpoints written before checksums were recorded are checked for non-finite params only."""
  recorded = meta.get('checksums', {})
  for name, tree in arrays.items():
    if name in recorded:
      damaged = damaged_arrays(tree, recorded[name])
      if damaged:
        return (f'{name} arrays differ from what was saved (checksum mismatch): '
                f'{_listing(damaged)}. The files are damaged.')
  nonfinite = nonfinite_arrays(arrays.get('params', {}))
  if nonfinite:
    return f'params hold NaN or infinite values: {_listing(nonfinite)}.'
  return ''
