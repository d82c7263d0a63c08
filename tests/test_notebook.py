"""The example notebook runs top to bottom on a fresh, TensorFlow-free install, so it cannot rot,
and its committed outputs (pictures included) are there to read on a code host."""
import json
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'examples' / 'mixmae_checkpoint.ipynb'


def test_example_notebook_trains_its_own_checkpoint_without_tensorflow(tmp_path, monkeypatch):
  """No demo run before it, and a `tensorflow` that cannot be imported: the core install."""
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard'):
    (tmp_path / 'poison' / name).mkdir(parents=True)
    (tmp_path / 'poison' / name / '__init__.py').write_text('raise ImportError("no TF here")\n')
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [str(tmp_path / 'poison'), str(REPO), os.environ.get('PYTHONPATH', '')]))
  monkeypatch.setenv('MIXMAE_CHECKPOINT', str(tmp_path / 'no_demo_run'))
  monkeypatch.setenv('MIXMAE_NOTEBOOK_WORKDIR', str(tmp_path / 'notebook_run'))
  monkeypatch.setenv('MIXMAE_NOTEBOOK_STEPS', '2')
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=1 '
                                  '--xla_backend_optimization_level=0')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'training the demo model for 2 steps' in text and 'step 2: loss' in text
  assert 'loss' in text and 'cosine similarity' in text
  assert 'recon + visible' in text
  assert any('image/jpeg' in o.get('data', {}) for o in outputs)
  assert (tmp_path / 'notebook_run' / 'checkpoints' / '2').is_dir()


def test_the_committed_notebook_carries_its_outputs():
  cells = json.loads(NOTEBOOK.read_text())['cells']
  code = [c for c in cells if c['cell_type'] == 'code']
  assert all(c['execution_count'] for c in code)
  outputs = [o for c in code for o in c['outputs']]
  assert not [o for o in outputs if o['output_type'] == 'error']
  assert sum('image/jpeg' in o.get('data', {}) for o in outputs) == 1
