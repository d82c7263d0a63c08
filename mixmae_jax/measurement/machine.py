"""What machine a figure was measured on: the CPU model and the vector extensions that decide how
fast its matmuls run (an AVX-512 or AMX machine runs the same step at another speed), so every
benchmark figure can name them; a process's host memory; and the accelerators' peak throughput,
for MFU."""
import ctypes
import gc
import os
import platform
import resource
import sys
from typing import Dict, List, Optional

# Extensions that change which kernels XLA's and PyTorch's CPU backends pick, in that order.
VECTOR_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'amx_tile',
                'amx_bf16', 'amx_int8', 'asimd', 'sve')


def cpu_description(cpuinfo: str = '/proc/cpuinfo') -> Dict[str, object]:
  """{'model', 'vector_extensions' (those of VECTOR_FLAGS it has), 'cores' (usable here)}."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open(cpuinfo, encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'cpu model') and value.strip():
          model = value.strip()
        elif key in ('flags', 'features') and not flags:
          flags = set(value.split())
  except OSError:
    pass
  extensions: List[str] = [f for f in VECTOR_FLAGS if f in flags]
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return {'model': model, 'vector_extensions': extensions, 'cores': cores}


def describe_line(cpu: Dict[str, object]) -> str:
  extensions = ', '.join(cpu['vector_extensions']) or 'none listed'
  return f'CPU: {cpu["model"]} ({cpu["cores"]} cores here; {extensions})'


def _memory_status(pid: int) -> Dict[str, int]:
  """{'VmRSS': bytes resident now, 'VmHWM': the most it has held}, read together (so the peak is
  never below the resident figure); empty where /proc does not say (not Linux, or it ended)."""
  out = {}
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
          out[key] = int(value.split()[0]) * 1024
  except (OSError, ValueError):
    return {}
  return out


def resident_bytes(pid: int) -> int:
  """The process's resident set now (0 where /proc does not say)."""
  return _memory_status(pid).get('VmRSS', 0)


def physical_memory_bytes() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def host_memory() -> Dict[str, int]:
  """This process's {'resident': bytes now, 'peak': the most it has held}."""
  status = _memory_status(os.getpid())
  if status:
    return {'resident': status.get('VmRSS', 0), 'peak': status.get('VmHWM', 0)}
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
  return {'resident': 0, 'peak': peak if sys.platform == 'darwin' else peak * 1024}


def trim_host_memory() -> None:
  """Hands the C allocator's free pages back to the system. glibc keeps them otherwise: a TPU
  batch search, compile after compile in one process, grew its resident set by GiBs that no
  object held any more."""
  gc.collect()
  try:
    ctypes.CDLL(None).malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: nothing to trim this way
    pass


# Dense bf16 matmul peak of one chip or GPU, TFLOP/s, by a fragment of `device.device_kind`
# (lower case); the first match wins, so the more specific fragments come first.
PEAK_TFLOPS = (
    ('v6 lite', 918.0), ('v6e', 918.0),  # TPU v6e (Trillium)
    ('v5 lite', 197.0), ('v5e', 197.0),  # TPU v5e
    ('v5p', 459.0), ('tpu v5', 459.0),  # TPU v5p reports itself as "TPU v5"
    ('tpu v4', 275.0),
    ('h200', 989.0),
    ('h100 pcie', 756.0), ('h100 nvl', 835.0), ('h100', 989.0),  # SXM
    ('a100', 312.0),
)


def peak_tflops(device_kind: str) -> Optional[float]:
  """The device's dense bf16 peak from PEAK_TFLOPS, or None when it is not in the table."""
  kind = device_kind.lower()
  return next((tflops for fragment, tflops in PEAK_TFLOPS if fragment in kind), None)
