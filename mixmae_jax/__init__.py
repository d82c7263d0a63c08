"""mixmae_jax: MixMAE and the masked-image-modelling methods around it, in JAX/Flax.

`mixmae_jax.load(path) -> (model, params)` opens any checkpoint the package writes or converts.
The package is layered, each layer importing only those before it:
`networks` (encoders, decoder, classifier, layers) < `objectives` (mixing, masking, each method)
< `architectures` (records of every model) < `data` (tf.data input) < `training`
(objective-agnostic step, loop, checkpoints) < `interop` (official checkpoints, `load`) <
`evaluation` (fine-tuning, probing, k-NN) < `measurement` (benchmarks, experiments).
"""
__version__ = '0.2.0'


def load(path, step=None, dtype=None):
  """(Flax module, params) from a checkpoint; see `mixmae_jax.interop.loading.load`."""
  from mixmae_jax.interop import loading  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return loading.load(path, step, jnp.float32 if dtype is None else dtype)
