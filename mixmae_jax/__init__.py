"""mixmae_jax: MixMAE pretraining of hierarchical vision transformers in JAX/Flax."""
__version__ = '0.1.0'
