"""Every registered objective, encoder family and checkpoint family meets its contract (the
Protocols of `objectives/contract.py`, `networks/contract.py` and `interop/contract.py`), and a
module that does not is told what it lacks."""
import types

import pytest

from mixmae_jax import interop, networks, objectives
from mixmae_jax.interop import contract as family_contract
from mixmae_jax.networks import contract as encoder_contract
from mixmae_jax.objectives import contract as objective_contract


@pytest.mark.parametrize('name', objectives.OBJECTIVES)
def test_every_objective_meets_the_contract(name):
  module = objectives.objective_module(name)
  assert objective_contract.problems(module) == []
  assert module.NAME == name
  assert module.DEFAULT_ENCODER in networks.ENCODERS


@pytest.mark.parametrize('name', networks.ENCODERS)
def test_every_encoder_family_meets_the_contract(name):
  module = networks.encoder_module(name)
  assert encoder_contract.problems(module) == []
  assert module.NAME == name


def test_a_module_short_of_the_contract_is_told_what_it_lacks():
  partial = types.ModuleType('half_an_objective')
  partial.NAME, partial.flops_per_image = 'half', 42
  found = objective_contract.problems(partial)
  assert 'half_an_objective has no Model' in found
  assert 'half_an_objective has no batch_multiple' in found
  assert 'half_an_objective.flops_per_image is not callable' in found
  assert 'half_an_objective has no NAME' not in found


def test_shared_defaults_are_declared_once():
  for name in objectives.OBJECTIVES:
    assert objectives.objective_module(name).RNG_STREAMS is objective_contract.RNG_STREAMS
  assert objectives.objective_module('mae').batch_multiple is objective_contract.any_batch_size
  assert objectives.objective_module('mixmae').batch_multiple(None)[0] == 2


@pytest.mark.parametrize('name', interop.FAMILIES)
def test_every_checkpoint_family_meets_the_contract(name):
  module = interop.family_module(name)
  assert family_contract.problems(module) == []
  assert all(interop.official_archs()[arch] == name for arch in module.ARCHS)


@pytest.mark.parametrize('name', objectives.OBJECTIVES)
def test_config_fields_are_the_dataclass_s_every_field_and_build_it_back(name):
  """One declaration: `model.objective` and `model.encoder` hold every field of the Config
  dataclasses (a nested decoder flattened), so each is settable from the command line, and a
  changed entry reaches the built config."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training.config_defaults import pretraining_config  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  config = pretraining_config(name)
  arch = objectives.objective_config(config.model)
  assert arch == objectives.objective_module(name).Config(encoder=arch.encoder)
  for f in dataclasses.fields(arch):
    value = getattr(arch, f.name)
    if f.name == 'encoder':
      assert set(config.model.encoder) == {'name'} | {g.name for g in dataclasses.fields(value)}
    elif dataclasses.is_dataclass(value):
      assert {f'{f.name}_{g.name}' for g in dataclasses.fields(value)} <= set(
          config.model.objective)
    else:
      assert f.name in config.model.objective
  config.model.encoder.drop_path_rate = 0.25
  if 'decoder_norm_eps' in config.model.objective:
    config.model.objective.decoder_norm_eps = 1e-3
    assert objectives.objective_config(config.model).decoder.norm_eps == 1e-3
  assert objectives.objective_config(config.model).encoder.drop_path_rate == 0.25


def test_a_config_written_before_a_field_existed_builds_with_the_default():
  from mixmae_jax.training.config_defaults import pretraining_config  # pylint: disable=import-outside-toplevel
  config = pretraining_config('mae')
  older = config.model.to_dict()
  del older['encoder']['qkv_bias'], older['objective']['decoder_norm_eps']
  import ml_collections  # pylint: disable=import-outside-toplevel
  arch = objectives.objective_config(ml_collections.ConfigDict(older))
  assert arch.encoder.qkv_bias is True and arch.decoder.norm_eps == 1e-6


@pytest.mark.parametrize('name', objectives.OBJECTIVES)
def test_every_objective_runs_through_what_generic_code_asks(name):
  """The loop over the registry: a toy model of each objective (its recipe's `:runlocal` size)
  draws from exactly its declared random streams, gives a finite loss whose gradients reach
  every parameter group, pictures whose columns are images, and FLOPs."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mixmae_jax import architectures  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training.config_defaults import (  # pylint: disable=import-outside-toplevel
      pretraining_config, shrink_for_local_run)
  module = objectives.objective_module(name)
  arch = objectives.objective_config(shrink_for_local_run(pretraining_config(name)).model)
  model = architectures.build_model(arch)
  batch = max(2, module.batch_multiple(arch)[0])
  size = arch.encoder.img_size
  images = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)
  rngs = {s: jax.random.PRNGKey(i) for i, s in enumerate(module.RNG_STREAMS)}
  params = model.init({'params': jax.random.PRNGKey(9), **rngs}, images)['params']
  loss = lambda p: model.apply({'params': p}, images, train=True, rngs=rngs)['loss']  # noqa
  value, grads = jax.value_and_grad(loss)(params)
  assert np.isfinite(float(value))
  for group, g in grads.items():
    assert any(float(np.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(g)), group
  out = jax.tree.map(np.asarray, model.apply({'params': params}, images, rngs=rngs))
  order, columns = module.picture_columns(images, out, arch)
  assert len(list(order)) == batch and columns
  for title, pictures in columns:
    assert isinstance(title, str) and pictures.shape == images.shape, title
  assert module.flops_per_image(arch)['train'] > 0
  assert all(isinstance(n, str) for n in module.NO_WEIGHT_DECAY)
