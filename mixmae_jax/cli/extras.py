"""Optional dependencies: which extra brings each, and the one line a command prints without it.

The core install loads checkpoints and runs the models; reading data for training needs
TensorFlow (`[train]`), the digits experiment scikit-learn (`[digits]`), converting official
checkpoints PyTorch (its CPU wheel is enough), compiling for absent TPUs libtpu (`[tpu]`).
"""
from typing import Optional

TORCH_CPU_INSTALL = 'pip install torch --index-url https://download.pytorch.org/whl/cpu'

# top-level module -> (what it is, the install command that brings it)
EXTRAS = {
    'tensorflow': ('TensorFlow', "pip install 'mixmae_jax[train]'"),
    'tensorflow_datasets': ('TensorFlow Datasets', "pip install 'mixmae_jax[train]'"),
    'tensorboard': ('TensorBoard', "pip install 'mixmae_jax[train]'"),
    'sklearn': ('scikit-learn', "pip install 'mixmae_jax[digits]'"),
    'torch': ('PyTorch', TORCH_CPU_INSTALL),
    'libtpu': ('the libtpu wheel', "pip install 'mixmae_jax[tpu]'"),
}


def missing_extra(error: BaseException) -> Optional[str]:
  """The `error:` line for an import of an optional dependency that is not installed, else None
  (a module of ours or of the core install missing is a broken install, not a missing extra)."""
  if not isinstance(error, ModuleNotFoundError) or not error.name:
    return None
  top = error.name.split('.')[0]
  if top not in EXTRAS:
    return None
  what, install = EXTRAS[top]
  return f'error: this needs {what}, which is not installed: {install}'
