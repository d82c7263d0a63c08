"""Every shipped config, with each of its arguments, resolves to the recipe recorded in
tests/fixtures/config_snapshots.json: a refactor of the config code cannot change a recipe
unnoticed. A deliberate change updates the record (`python tests/test_config_snapshots.py`)
and the diff shows exactly which fields of which recipes moved."""
import importlib.util
import json
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SNAPSHOTS = REPO / 'tests' / 'fixtures' / 'config_snapshots.json'
CONFIGS = sorted(p for p in (REPO / 'configs').glob('*.py') if not p.stem.startswith('_'))


def _module(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f'snapshot_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variants(path: pathlib.Path):
  """(key, arg) for the config alone, each of its words, and all of them together."""
  words = list(_module(path).ARGS)
  args = [None] + words + ([','.join(words)] if len(words) > 1 else [])
  return [(f'{path.stem}:{arg or ""}', arg) for arg in args]


def resolve(path: pathlib.Path, arg):
  config = _module(path).get_config(arg)
  return json.loads(config.to_json_best_effort(sort_keys=True))


def record() -> dict:
  return {key: resolve(path, arg) for path in CONFIGS for key, arg in variants(path)}


@pytest.fixture(scope='module')
def recorded():
  return json.loads(SNAPSHOTS.read_text())


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_each_config_resolves_to_its_recorded_recipe(path, recorded):
  for key, arg in variants(path):
    assert key in recorded, f'{key} is not recorded: run python tests/test_config_snapshots.py'
    assert resolve(path, arg) == recorded[key], f'{key} differs from its recorded recipe'


def test_every_recorded_recipe_still_exists(recorded):
  assert set(recorded) == {key for path in CONFIGS for key, _ in variants(path)}


if __name__ == '__main__':
  sys.path.insert(0, str(REPO))
  SNAPSHOTS.write_text(json.dumps(record(), indent=1, sort_keys=True) + '\n')
  print(f'wrote {SNAPSHOTS}')
