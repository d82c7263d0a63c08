"""The recipes, one file each, found by name (`--config=demo`); installed as mixmae_jax.configs."""
