"""What a step needs in device memory: the peak a device held and the compiled plan, and the
largest batch that fits, found by running (the benchmark's `--find_max_batch` on a GPU; on a TPU
slice compiled here, `tpu_targets.largest_batch` reads the compiler's plans instead, and ends
in the same `boundary` search)."""
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
  """Whether an error is a device (or, compiling for a TPU, the compiler's plan) out of memory."""
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def largest_batch(fits: Callable[[int], bool], start: int, limit: int, granule: int = 2) -> int:
  """The largest multiple of `granule` (even) in [granule, limit] for which `fits` holds, given
  that every batch below one that fits also fits: doubling from `start`, then bisecting. 0 when
  not even `granule` fits."""
  top = limit // granule * granule
  probe = max(granule, min(start, top) // granule * granule)
  if fits(probe):
    return boundary(fits, probe, top + granule, top, granule, step=probe)
  return boundary(fits, 0, probe, top, granule, step=granule)


def boundary(fits: Callable[[int], bool], lo: int, hi: int, top: int, granule: int,
             step: int) -> int:
  """The largest multiple of `granule` <= `top` that fits, given that `lo` fits (0: none known
  to) and `hi` does not (`top + granule`: none known not to). While nothing is refused it
  gallops up from `lo` (by `step`, doubling), then it bisects."""
  while hi - lo > granule:
    if hi > top:
      probe = min(top, lo + step)
      step *= 2
    else:
      probe = (lo + hi) // 2 // granule * granule
    if fits(probe):
      lo = probe
    else:
      hi = probe
  return lo
