"""Pretraining objectives, one module each, and the mixing and masking they are built from.

**Objective contract.** Each objective is one module of this package (`mixmae`, `mae`, `ummae`,
`simmim`, `mixedae`), found by its name (`objective_module('mae')`), that reads like its paper and
exposes:

- `NAME`, `Config`: a frozen dataclass with an `encoder` (an encoder family's Config), the
  objective's own settings with the recipe's defaults, and `problems()` (messages naming
  `encoder.` / `objective.` fields). It is the one declaration of the settings: a config's
  `model.objective` entries are its fields (`objective_fields`; a nested decoder's flattened as
  `decoder_dim`, ...) and build it back (`objective_config`);
- `RUNLOCAL` (toy-size objective fields) and `DEFAULT_ENCODER`;
- `Model(config, dtype, options)`: a Flax module; `__call__(images, <explicit masks>=None,
  train=False)` returns at least {'loss', 'pred'}, optionally 'metrics' (scalars averaged into
  the training log); masks not given are drawn from the 'mask' rng;
- hooks for generic code: `NO_WEIGHT_DECAY` (top-level param names AdamW leaves alone besides
  1-D params), `RNG_STREAMS` (the named random streams the model draws from),
  `batch_multiple(config)` -> (n, why): each device's micro-batch must be a multiple of n,
  `picture_columns(images, out, config)` -> (row order, [(title, images)]) for reconstruction
  pictures, `flops_per_image(config)` with at least 'train', and `fixed_buffers(config)` (the
  official model's non-trainable tensors, for checkpoint conversion).

The generic training, checkpoint, optimizer, picture, benchmark and loading code uses only these,
so a new method is one module here plus its configs. `contract.py` declares the list as a
`typing.Protocol` with the shared defaults (`RNG_STREAMS`, `any_batch_size`) and says what the
loop cannot yet host; `tests/test_contracts.py` checks every objective against it. Nothing here
imports data, training or evaluation code.
"""
import importlib
from types import ModuleType
from typing import Any

from mixmae_jax import networks
from mixmae_jax.networks import config_fields

# The modules of this package that are pretraining objectives.
OBJECTIVES = ('mixmae', 'mae', 'ummae', 'simmim', 'mixedae')


def objective_module(name: str) -> ModuleType:
  """The module of a pretraining objective, by name."""
  if name not in OBJECTIVES:
    raise ValueError(f'unknown objective {name!r}: use one of {", ".join(OBJECTIVES)}.')
  return importlib.import_module(f'mixmae_jax.objectives.{name}')


def objective_fields(name: str) -> Any:
  """`model.objective` of a config: `name` and every setting of the objective's Config."""
  return config_fields.as_fields(objective_module(name).Config(), name)


def objective_config(model) -> Any:
  """The frozen config of a config's `model` (its `model.objective` and `model.encoder`)."""
  module = objective_module(model.objective.name)
  return config_fields.from_fields(module.Config, model.objective,
                                   encoder=networks.encoder_config(model.encoder))
