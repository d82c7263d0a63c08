"""mixmae_jax: MixMAE and the masked-image-modelling methods around it, in JAX/Flax.

`mixmae_jax.load(name_or_path)` opens a published release by name (downloaded and converted
once, then cached: `python -m mixmae_jax.weights list`) or any checkpoint the package writes or
converts, and returns the (model, params) pair with notebook methods on it (`preprocess`,
`features`, `reconstruct`, `show`: `mixmae_jax.interop.notebook`).

The package is layered, each layer importing only those before it: `cli` (what every command
shares) < `networks` (encoders, decoder, classifier, layers) < `objectives` (mixing, masking,
each method) < `architectures` (records of every model) < `data` (tf.data input) < `training`
(objective-agnostic step, loop, checkpoints) < `interop` (official checkpoints, `load`) <
`weights` (releases by name) < `evaluation` (fine-tuning, probing, k-NN) < `measurement`
(benchmarks, experiments).
"""
__version__ = '0.2.0'


def load(name_or_path, step=None, dtype=None):
  """A checkpoint (a workdir, its checkpoints dir or a step dir, local or remote) or a published
  release by name -> `Pretrained`, which unpacks as `model, params`."""
  import os  # pylint: disable=import-outside-toplevel

  from mixmae_jax.cli import startup  # pylint: disable=import-outside-toplevel
  startup.tell_libtpu_there_is_no_tpu()  # before JAX starts a backend: no TPU-VM probing noise
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from mixmae_jax.interop import loading, notebook  # pylint: disable=import-outside-toplevel
  dtype = jnp.float32 if dtype is None else dtype
  path = str(name_or_path)
  if '://' in path or os.path.exists(path) or os.sep in path:
    return notebook.wrap(loading.load(path, step, dtype), path)
  from mixmae_jax import weights  # pylint: disable=import-outside-toplevel
  return notebook.wrap(weights.load(path, step, dtype), path)
