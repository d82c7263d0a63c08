"""Deviceless compilation for TPU topologies (needs the libtpu wheel: the `[tpu]` extra)."""
import importlib.util
import os

import pytest

from mixmae_jax.measurement import benchmark, tpu_targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                reason='libtpu is not installed (pip install -e .[tpu])')
TINY = ['--config.model.encoder.embed_dim=32', '--config.model.encoder.depths=(1, 1, 1, 1)',
        '--config.model.encoder.num_heads=(1, 2, 2, 4)', '--config.model.objective.decoder_dim=32',
        '--config.model.objective.decoder_depth=1', '--config.model.objective.decoder_num_heads=2']


def _compile(*flags):
  return benchmark.main(['--config=' + os.path.join(REPO, 'configs', 'demo.py'),
                         '--tpu_topology=v5e:2x2', '--batch_size=2', *TINY, *flags])


def test_the_train_step_compiles_for_a_v5e_slice_and_reports_its_plan(capsys):
  figures = _compile()
  assert figures['devices'] == 4 and 'v5' in figures['device_kind'].lower()
  plan = figures['memory_plan']
  assert plan['argument'] > 0 and plan['temp'] > 0 and plan['total'] <= figures['hbm_bytes']
  assert figures['fits'] and figures['compile_seconds'] > 0
  host = figures['host_memory_after_compile']['2']  # the one compile, by its per-device batch
  assert list(figures['host_memory_after_compile']) == ['2']
  assert host['peak'] >= host['resident'] > 0
  # XLA's count and ours agree on the order of magnitude (XLA counts loop bodies once).
  assert 0.2 < figures['xla_flops_per_image'] / figures['analytic_flops_per_image'] < 5
  lines = capsys.readouterr().out.strip().splitlines()
  assert 'compiled here, nothing run' in lines[1] and lines[-1].startswith('{')


def test_the_sharded_state_plans_fewer_argument_bytes_per_chip():
  replicated = _compile()['memory_plan']['argument']
  sharded = _compile('--config.state_sharding=sharded')['memory_plan']['argument']
  assert sharded < replicated


def test_an_unknown_topology_is_a_clear_error():
  with pytest.raises(SystemExit, match='not a TPU topology'):
    tpu_targets.topology_devices('v99:1x1')
