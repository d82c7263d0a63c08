"""The package's layers import one way, nobody reaches into another module's private names, and
the objective-agnostic code names no objective or encoder family."""
import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'mixmae_jax'
# Each layer may import only the layers before it (and itself).
ORDER = ['cli', 'networks', 'objectives', 'architectures', 'data', 'training', 'interop',
         'weights', 'evaluation', 'measurement', 'entry']
ENTRY_POINTS = {'__init__', 'train', 'finetune', 'convert', 'scripts'}


def _layer(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  if len(parts) == 1:
    return 'entry' if parts[0] in ENTRY_POINTS else parts[0]
  return parts[0]


def _imports(path: pathlib.Path):
  """(module, imported names) of every `mixmae_jax...` import in a file, nested ones included."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('mixmae_jax'):
      yield node.module, [a.name for a in node.names]
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('mixmae_jax'):
          yield alias.name, []


def _target_layer(module: str, names) -> str:
  parts = module.split('.')
  if len(parts) > 1:
    return 'entry' if parts[1] in ENTRY_POINTS else parts[1]
  return min((n if n in ORDER else 'entry' for n in names), key=ORDER.index, default='entry')


FILES = sorted(PACKAGE.rglob('*.py'))


@pytest.mark.parametrize('path', FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
  own = ORDER.index(_layer(path))
  for module, names in _imports(path):
    target = _target_layer(module, names)
    if module == 'mixmae_jax' and not names:
      continue
    assert ORDER.index(target) <= own, f'{path.name} ({_layer(path)}) imports {module} ({target})'


@pytest.mark.parametrize('path', FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_module_s_private_names(path):
  for module, names in _imports(path):
    private = [n for n in names if n.startswith('_')]
    assert not private, f'{path.name} imports {private} from {module}'
  text = path.read_text().replace('os._exit(', 'os.exit(')  # the standard library's hard exit
  assert not re.search(r'\b(?!self\b)[a-z_]+\._[a-z]\w*\(', text.replace('self._', '')) or \
      path.name == '__init__.py', f'{path.name} calls another module\'s private function'


def _family_words():
  """Every objective, encoder and checkpoint family by its registered name, with the spellings
  papers use (`um-mae`): what objective-agnostic code must not name."""
  from mixmae_jax import interop, networks, objectives  # pylint: disable=import-outside-toplevel
  names = set(objectives.OBJECTIVES) | set(networks.ENCODERS) | set(interop.FAMILIES)
  words = set()
  for name in names:
    words |= set(name.split('_'))
  return sorted(words | {w.replace('mae', '-mae') for w in words if w.endswith('mae') and
                         w != 'mae'})


GENERIC = [PACKAGE / 'architectures.py', PACKAGE / 'interop' / 'loading.py',
           PACKAGE / 'measurement' / 'benchmark.py',
           PACKAGE / 'measurement' / 'benchmark_report.py'] + sorted(
               (PACKAGE / 'training').glob('*.py'))


@pytest.mark.parametrize('path', GENERIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_generic_code_names_no_objective_or_encoder_family(path):
  text = path.read_text().replace('mixmae_jax', '')
  for word in _family_words():
    assert not re.search(rf'\b{re.escape(word)}\b', text, re.IGNORECASE), \
        f'{path.name} names {word}'
