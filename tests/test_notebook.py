"""The example notebook runs top to bottom on a fresh checkpoint, so it cannot rot."""
import pathlib

import pytest

from mixmae_jax.training import pretraining as train_loop
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / 'examples' / 'mixmae_checkpoint.ipynb'


def test_example_notebook_executes(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  config = shrink_for_local_run(pretraining_config('mixmae', size='base'))
  config.batch_size, config.num_train_steps, config.reconstruction_images = 16, 3, 0
  train_loop.train_and_evaluate(config, str(tmp_path / 'run'))
  monkeypatch.setenv('MIXMAE_CHECKPOINT', str(tmp_path / 'run'))
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'loss' in text and 'cosine similarity' in text
  assert any('image/png' in o.get('data', {}) for o in outputs)
