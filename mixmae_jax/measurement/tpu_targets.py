"""Compiling the real train step for TPU chips that are not here: XLA's memory plan and FLOPs.

With the `libtpu` wheel installed (`pip install -e '.[tpu]'`, which also works on a machine
without TPUs), JAX describes a TPU slice
by its topology name (`v5e:2x2`, `v4:2x2x1`, `v5p:2x2x1`, `v6e:2x2`) as abstract devices; a step
lowered for them compiles on this CPU exactly as it would on the slice, and the compiled program
says how much memory each chip needs (arguments, temporaries, outputs, of which aliased by
donation) and how many FLOPs it runs. Nothing executes. The TPU compiler refuses a program that
does not fit a chip's HBM, which is how `largest_batch` finds the largest per-device batch.

v4 topologies come as one device per TensorCore (two per chip, each with half the chip's HBM);
v5e and v6e have one TensorCore per chip, v5p's two cores are one device (megacore).
"""
import importlib.util
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mixmae_jax.cli import startup
from mixmae_jax.measurement import device_memory, machine

GIB = 2**30
# HBM per JAX device by a fragment of `device_kind` (lower case), first match wins.
HBM_BYTES = (('v6 lite', 32 * GIB), ('v5 lite', 16 * GIB), ('v5p', 95 * GIB),
             ('tpu v5', 95 * GIB), ('tpu v4', 16 * GIB))


def hbm_bytes(device_kind: str) -> Optional[int]:
  kind = device_kind.lower()
  return next((size for fragment, size in HBM_BYTES if fragment in kind), None)


def topology_devices(name: str) -> List[Any]:
  """The abstract devices of a TPU topology, e.g. 'v5e:2x2'; a clear error without libtpu."""
  startup.tell_libtpu_there_is_no_tpu()  # and that several compiles may share it
  # Only compiling happens here: keep JAX's own computations (shapes, inits) on the CPU rather
  # than letting it look for a TPU at start-up, unless the user chose platforms.
  import jax  # pylint: disable=import-outside-toplevel
  if not os.environ.get('JAX_PLATFORMS'):
    jax.config.update('jax_platforms', 'cpu')
  # Compile seconds are measured, and a persistent cache cannot load programs for absent chips.
  jax.config.update('jax_enable_compilation_cache', False)
  if importlib.util.find_spec('libtpu') is None:
    raise SystemExit("compiling for a TPU topology needs the libtpu wheel: pip install -e '.[tpu]'")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return list(topologies.get_topology_desc(platform='tpu', topology_name=name).devices)
  except Exception as e:  # pylint: disable=broad-except
    if 'lockfile' in str(e):
      raise SystemExit(f'libtpu could not start ({e}). Another process holds it: set '
                       f'ALLOW_MULTIPLE_LIBTPU_LOAD=1 or wait for that one.') from e
    raise SystemExit(f'--tpu_topology {name!r} is not a TPU topology JAX knows ({e}); use e.g. '
                     f'v5e:2x2, v5e:2x4, v4:2x2x1, v5p:2x2x1 or v6e:2x2.') from e


def compile_abstract(step: Callable, inputs: Sequence[Any]) -> Tuple[Any, float, float]:
  """(compiled program or the exception that refused it, wall seconds, CPU seconds)."""
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    compiled = step.lower(*inputs).compile()
  except Exception as e:  # pylint: disable=broad-except
    compiled = e
  return compiled, time.perf_counter() - start, time.process_time() - cpu_start


def memory_plan(compiled) -> Dict[str, int]:
  """Per-device bytes of the compiled program; `total` counts donated (aliased) arguments once."""
  analysis = compiled.memory_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  plan = {name: int(getattr(analysis, f'{name}_size_in_bytes', 0))
          for name in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  plan['total'] = (plan['argument'] + plan['output'] - plan['alias'] + plan['temp'] +
                   plan['generated_code'])
  return plan


def planned_total(compiled) -> Optional[int]:
  """The compiled program's `memory_plan` total; None when the compiler refused it."""
  return None if isinstance(compiled, Exception) else memory_plan(compiled)['total']


def release_compiles() -> Dict[str, int]:
  """Drops what compiles left behind (JAX's caches of traced and compiled programs, the
  allocator's free pages), which would otherwise pile up compile after compile in a batch
  search; returns the process's host memory after (`machine.host_memory`)."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.clear_caches()
  machine.trim_host_memory()
  return machine.host_memory()


def flops(compiled) -> Optional[float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def largest_batch(plan_at: Callable[[int], Optional[int]], hbm: int, first: int, limit: int,
                  granule: int, known: Optional[Dict[int, Optional[int]]] = None,
                  bytes_per_image: Optional[float] = None
                  ) -> Tuple[int, Dict[int, Optional[int]]]:
  """The largest multiple of `granule` <= `limit` whose program fits `hbm`, with the batches
  tried and their total bytes (None: refused by the compiler); `known` holds plans already
  compiled (the caller's first batch), which are not compiled again.

  Each compile of a large model takes minutes, so compiles are spent where they tell most:
  memory grows about linearly with the batch, so two plans fix a line whose crossing of `hbm`
  is tried next, then its neighbour. The second plan is taken where the first plus
  `bytes_per_image` per added image fills `hbm` (a slope measured on another chip, from its
  first plan to where its compiler gave up: when it holds, the second plan is the answer and its
  neighbour is compiled next to settle it), or without it where memory in proportion to the
  batch would. Where memory grows more slowly than the
  line near the boundary, the search gallops up from the largest batch that fitted; where the
  compiler refuses before the line says it should, it bisects between that batch and the
  smallest that did not fit. The answer is verified: it fits, the next multiple does not (or is
  over `limit`).
  """
  tried: Dict[int, Optional[int]] = dict(known or {})
  top = limit // granule * granule
  bounds = [0, top + granule]  # the largest batch known to fit, the smallest known not to

  def test(batch: int) -> bool:
    if batch not in tried:
      tried[batch] = plan_at(batch)
    fits = tried[batch] is not None and tried[batch] <= hbm
    if fits:
      bounds[0] = max(bounds[0], batch)
    else:
      bounds[1] = min(bounds[1], batch)
    return fits

  batch = min(top, max(granule, first // granule * granule))
  test(batch)
  while bounds[0] == 0 and batch > granule:  # halve until one fits
    batch = max(granule, batch // 2 // granule * granule)
    test(batch)
  if bounds[0] == 0:
    return 0, tried
  if len(_planned(tried)) < 2 and bounds[1] - bounds[0] > granule:
    # a second point near the boundary; without a measured slope, memory taken as proportional
    # to the batch (the fixed part, params and optimizer state, makes this an underestimate,
    # so it tends to fit)
    per_image = bytes_per_image or max(tried[bounds[0]], 1) / bounds[0]
    second = int(bounds[0] + (hbm - tried[bounds[0]]) / per_image + 1e-6) // granule * granule
    second = min(max(second, bounds[0] + granule), bounds[1] - granule)
    fitted = test(second)
    if bytes_per_image:  # the measured slope's answer is likely next to it: settle that first
      neighbour = second + granule if fitted else second - granule
      if bounds[0] < neighbour < bounds[1]:
        test(neighbour)
  guess = _crossing(tried, hbm, granule, top)
  if guess is not None:
    guess = min(max(guess, bounds[0]), bounds[1])
    if bounds[0] < guess < bounds[1]:
      test(guess)
    neighbour = guess + granule if bounds[0] >= guess else guess - granule
    if bounds[0] < neighbour < bounds[1]:
      test(neighbour)
  # the boundary is near the line: gallop up from one granule (nothing refused yet) or bisect
  return device_memory.boundary(test, bounds[0], bounds[1], top, granule, granule), tried


def _planned(tried: Dict[int, Optional[int]]) -> List[int]:
  return sorted(b for b, total in tried.items() if total is not None)


def _crossing(tried: Dict[int, Optional[int]], hbm: int, granule: int,
              top: int) -> Optional[int]:
  """The multiple of `granule` (at most `top`) where the line through the two largest plans
  reaches `hbm`; None without two plans, `top` where memory does not grow with the batch."""
  planned = _planned(tried)
  if len(planned) < 2:
    return None
  a, b = planned[-2:]
  slope = (tried[b] - tried[a]) / (b - a)
  if slope <= 0:
    return top
  return min(top, max(granule, int(b + (hbm - tried[b]) / slope) // granule * granule))
