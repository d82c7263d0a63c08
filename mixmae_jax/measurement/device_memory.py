"""What a step needs in device memory: the peak a device held and the compiled plan, and the
largest batch that fits, found by running (the benchmark's `--find_max_batch` on a GPU; on a TPU
slice compiled here, `tpu_targets.largest_batch` reads the compiler's plans instead)."""
from typing import Any, Callable, Dict

import jax


def memory_figures(compiled) -> Dict[str, Any]:
  """Peak bytes the first device has held (GPU/TPU; None on CPU) and the compiled program's
  memory plan (arguments, outputs, temporaries, per device)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  out: Dict[str, Any] = {'peak_memory_bytes': stats.get('peak_bytes_in_use'),
                         'memory_limit_bytes': stats.get('bytes_limit')}
  try:
    analysis = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    analysis = None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  out['compiled_memory_bytes'] = None if analysis is None else {
      name: int(getattr(analysis, f'{name}_size_in_bytes', 0))
      for name in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  return out


def out_of_memory(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def largest_batch(fits: Callable[[int], bool], start: int, limit: int, granule: int = 2) -> int:
  """The largest multiple of `granule` (even) in [granule, limit] for which `fits` holds, given
  that every batch below one that fits also fits: doubling from `start`, then bisecting. 0 when
  not even `granule` fits."""
  lo, hi = 0, limit // granule * granule + granule  # lo fits (0 trivially); hi is out of reach
  probe = max(granule, min(start, limit) // granule * granule)
  while probe < hi:
    if not fits(probe):
      hi = probe
      break
    lo, probe = probe, 2 * probe
  while hi - lo > granule:
    middle = max(lo + granule, (lo + hi) // (2 * granule) * granule)
    if fits(middle):
      lo = middle
    else:
      hi = middle
  return lo
