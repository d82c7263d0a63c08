"""Quiet start-up: what TensorFlow and libtpu print before a command has done anything.

Both read their settings from the environment when they load, so `quiet()` runs before JAX
initialises a backend or TensorFlow is imported. Values the user set are kept.
"""
import contextlib
import glob
import importlib.util
import os
import sys
import tempfile

# Google's PCI vendor id: a TPU chip attached to this machine shows up under it.
_TPU_PCI_VENDOR = '0x1ae0'


def tpu_chips_present() -> bool:
  """Whether this machine has TPU chips (PCI devices of Google's vendor id, or accel nodes)."""
  if glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'):
    return True
  for path in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(path, encoding='ascii') as f:
        if f.read().strip() == _TPU_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def tell_libtpu_there_is_no_tpu() -> None:
  """With the libtpu wheel installed (for compiling TPU programs on a CPU machine), JAX loads it
  at start-up and it prints errors about the TPU VM it cannot find (its accelerator type and
  worker host names); these settings say there is none. On a TPU VM nothing is changed."""
  if importlib.util.find_spec('libtpu') is None or tpu_chips_present():
    return
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', 'none')
  os.environ.setdefault('TPU_HOST_BOUNDS', '1,1,1')
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  # libtpu keeps one process per machine by a lock file, to share real chips; compiling for
  # absent ones shares nothing, and several commands (or test workers) may run at once.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


# What TensorFlow's C++ libraries print while they load, before any setting is read: info lines
# (`I0000 ... port.cc] oneDNN custom operations are on`) and absl's note that they go to stderr.
_LOAD_NOISE = ('I0000 ', 'WARNING: All log messages before absl::InitializeLog()')


@contextlib.contextmanager
def _stderr_filtered(noise=_LOAD_NOISE):
  """Capture file descriptor 2 (where C++ libraries write) and pass on all but `noise`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode('utf-8', 'replace').splitlines(True)
              if not line.startswith(noise)]
      sys.stderr.write(''.join(kept))


def load_tensorflow_quietly() -> None:
  """Import TensorFlow (when installed) with its load-time info lines dropped; later imports
  find it loaded. Its own warnings and errors still show."""
  if 'tensorflow' in sys.modules or importlib.util.find_spec('tensorflow') is None:
    return
  with _stderr_filtered():
    try:
      import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:  # a broken install: the command's own import says so, as one line
      pass


def quiet(tensorflow: bool = False) -> None:
  """TensorFlow's info lines hidden (`tensorflow`: load it now, for commands that read data),
  libtpu told there is no TPU on a machine without one."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  tell_libtpu_there_is_no_tpu()
  if tensorflow:
    load_tensorflow_quietly()
