"""mixmae_jax: MixMAE pretraining of hierarchical vision transformers in JAX/Flax.

`mixmae_jax.load(path) -> (model, params)` opens any checkpoint the package writes.
"""
__version__ = '0.1.0'


def load(path, step=None, dtype=None):
  """(Flax module, params) from a checkpoint; see `mixmae_jax.loading.load`."""
  from mixmae_jax import loading  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return loading.load(path, step, jnp.float32 if dtype is None else dtype)
