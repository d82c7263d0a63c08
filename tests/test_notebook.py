"""The example notebook runs top to bottom on the notebook API alone, without TensorFlow or
PyTorch, so it cannot rot; its committed outputs are there to read on a code host."""
import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'examples' / 'pretrained_weights.ipynb'
sys.path.insert(0, str(REPO / 'tests'))
import tiny_releases  # noqa: E402  pylint: disable=wrong-import-position


def test_example_notebook_runs_on_the_api_alone(tmp_path, monkeypatch):
  """On a small MAE checkpoint (the download itself is tested in test_weights.py), with
  `tensorflow` and `torch` that cannot be imported."""
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  from test_notebook_api import _checkpoint  # pylint: disable=import-outside-toplevel
  _checkpoint(tmp_path / 'mae', tiny_releases.MAE)
  for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'torch'):
    (tmp_path / 'poison' / name).mkdir(parents=True)
    (tmp_path / 'poison' / name / '__init__.py').write_text(f'raise ImportError("no {name}")\n')
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [str(tmp_path / 'poison'), str(REPO), os.environ.get('PYTHONPATH', '')]))
  monkeypatch.setenv('MIXMAE_EXAMPLE_WEIGHTS', str(tmp_path / 'mae'))
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=1')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  text = ''.join(o.get('text', '') for cell in code for o in cell.outputs)
  assert '<mixmae_jax mae vit at 64 px' in text and 'photos -> (6, 64, 64, 3)' in text
  assert "'masks': (6, 16)" in text and 'features (6, 16) tokens (6, 17, 16)' in text
  assert any('image/jpeg' in o.get('data', {}) or 'image/png' in o.get('data', {})
             for cell in code for o in cell.outputs)
  source = '\n'.join(cell.source for cell in code)
  assert 'mixmae_jax.load(NAME)' in source and 'from mixmae_jax' not in source  # the API only


def test_the_committed_notebook_carries_its_outputs():
  cells = json.loads(NOTEBOOK.read_text())['cells']
  code = [c for c in cells if c['cell_type'] == 'code']
  assert all(c['execution_count'] for c in code)
  outputs = [o for c in code for o in c['outputs']]
  assert not [o for o in outputs if o['output_type'] == 'error']
  assert sum('image/jpeg' in o.get('data', {}) or 'image/png' in o.get('data', {})
             for o in outputs) == 1
