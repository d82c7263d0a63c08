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
  partial.NAME, partial.fields = 'half', 42
  found = objective_contract.problems(partial)
  assert 'half_an_objective has no Model' in found
  assert 'half_an_objective has no batch_multiple' in found
  assert 'half_an_objective.fields is not callable' in found
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
