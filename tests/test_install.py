"""What installs: the declared dependencies are exactly the imported ones, the core install
(no TensorFlow) is enough to load any checkpoint, and the Python floor is JAX's."""
import ast
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np

from mixmae_jax import architectures
from mixmae_jax.networks import swin
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.objectives.mixmae import MixMAEConfig
from mixmae_jax.training import checkpointing

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'mixmae_jax'


def _setup():
  spec = importlib.util.spec_from_file_location('mixmae_jax_setup', REPO / 'setup.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # `setup()` runs only as __main__
  return module


def _distribution(requirement: str) -> str:
  return re.sub(r'[-_.]+', '-', re.split(r'[\[<>=; ]', requirement, maxsplit=1)[0]).lower()


def _third_party_imports(paths):
  """Top-level module -> files importing it, for modules outside the standard library."""
  found = {}
  for path in paths:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split('.')[0]
        if top not in sys.stdlib_module_names and top != 'mixmae_jax':
          found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
  return found


def _module_distributions():
  """Top-level module -> normalized distribution names providing it (in this environment)."""
  return {module: {_distribution(d) for d in dists}
          for module, dists in importlib.metadata.packages_distributions().items()}


def test_declared_dependencies_are_exactly_the_imported_ones():
  setup = _setup()
  runtime = {'core': setup.CORE, 'train': setup.TRAIN,
             'torch': setup.EXTRAS_REQUIRE['torch'], 'digits': setup.EXTRAS_REQUIRE['digits'],
             'weights': setup.EXTRAS_REQUIRE['weights']}
  declared = {_distribution(r): group for group, reqs in runtime.items() for r in reqs}
  providers = _module_distributions()
  imported = _third_party_imports(sorted(PACKAGE.rglob('*.py')))
  used = set()
  for module, files in sorted(imported.items()):
    # an optional package this environment lacks (e.g. torch beside `[test]` alone) is matched
    # to the requirement of its own name
    installed = providers.get(module) or {_distribution(module)}
    names = installed & set(declared)
    assert names, f'{module} (imported by {sorted(files)[:3]}) is not declared in setup.py'
    used |= names
  # tensorflow and tensorflow-cpu are one requirement for two platforms
  unused = set(declared) - used - {'tensorflow', 'tensorflow-cpu'}
  assert not unused, f'declared in setup.py but never imported: {sorted(unused)}'


def _modules_loaded_by(code: str, env=None):
  out = subprocess.run([sys.executable, '-c', code + '\nimport sys\nprint(sorted(sys.modules))'],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout.strip().splitlines()


def _poisoned_env(tmp_path):
  """PYTHONPATH with TensorFlow, TFDS and TensorBoard packages that cannot be imported."""
  for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard'):
    (tmp_path / 'poison' / name).mkdir(parents=True)
    (tmp_path / 'poison' / name / '__init__.py').write_text(
        f'raise ImportError("the core install has no {name}")\n')
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path / 'poison'), str(REPO), os.environ.get('PYTHONPATH', '')]))


def test_loading_a_checkpoint_needs_only_the_core_install(tmp_path):
  encoder = swin.config('base', img_size=64, embed_dim=8, depths=(1, 1, 1, 1),
                        num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2))
  arch = MixMAEConfig(encoder=encoder, decoder=DecoderConfig(dim=16, depth=1, num_heads=2))
  shapes = architectures.abstract_params(architectures.build_model(arch))
  params = jax.tree.map(lambda s: np.full(s.shape, 0.5, np.float32), shapes)
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'run' / 'checkpoints'), keep=None)
  ckpt.save(3, params, None, {'arch': architectures.to_dict(arch)})
  ckpt.wait()
  ckpt.close()
  code = (f'import jax.numpy as jnp, mixmae_jax\n'
          f'model, params = mixmae_jax.load({str(tmp_path / "run")!r})\n'
          f'out = model.apply({{"params": params}}, jnp.zeros((2, 64, 64, 3)), '
          f'mask=jnp.eye(2, dtype=int))\n'
          f'assert jnp.isfinite(out["loss"])')
  loaded = _modules_loaded_by(code, _poisoned_env(tmp_path))
  ours = [m for m in loaded if m.startswith('mixmae_jax')]
  assert not [m for m in loaded if m.split('.')[0] in ('tensorflow', 'tensorboard')]
  # and every third-party import of the modules it used is in the core requirements
  core = {_distribution(r) for r in _setup().CORE}
  files = [PACKAGE.parent.joinpath(*m.split('.')).with_suffix('.py') for m in ours]
  files = [f if f.exists() else f.with_suffix('') / '__init__.py' for f in files]
  providers = _module_distributions()
  for module, users in _third_party_imports(files).items():
    assert providers.get(module, set()) & core, f'{module} ({sorted(users)}) is not in CORE'


def test_python_floor_is_that_of_jax():
  text = (REPO / 'setup.py').read_text()
  floor = re.search(r"python_requires='>=(3\.\d+)'", text).group(1)
  jax_floor = re.search(r'>=\s*(3\.\d+)',
                        importlib.metadata.metadata('jax')['Requires-Python']).group(1)
  assert floor == jax_floor
  assert [int(x) for x in floor.split('.')] <= list(sys.version_info[:2])
