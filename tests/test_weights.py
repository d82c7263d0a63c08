"""Weights by name against a local HTTP server: MixMIM and UM-MAE through a mirror, MAE through
the Hugging Face Hub client (safetensors, no PyTorch), a file placed by hand with no server at
all; and the faults a download meets (a transfer cut short, a wrong hash, a damaged cached file,
two processes at once), each leaving the cache usable with nothing lost."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mixmae_jax
from mixmae_jax import weights
from mixmae_jax.weights import __main__ as weights_cli
from mixmae_jax.weights import cache, table

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_releases  # noqa: E402  pylint: disable=wrong-import-position
from file_server import FileServer  # noqa: E402  pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip('safetensors')


@pytest.fixture
def files(tmp_path_factory, monkeypatch):
  tiny_releases.register(monkeypatch)
  directory = tmp_path_factory.mktemp('official')
  written = tiny_releases.write_files(str(directory))
  return {name: (directory / name).read_bytes() for name in written}


@pytest.fixture
def server(files, monkeypatch, tmp_path):
  monkeypatch.setenv(cache.ENV, str(tmp_path / 'cache'))
  with FileServer() as s:
    s.files.update(files)  # the mirror's /<file_name>
    s.files['tests/vit_micro.mae/model.safetensors'] = files['vit_micro.mae.safetensors']
    yield s


def _images(count=4, size=48):
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8) for _ in range(count)]


def _need(files, name):
  if name not in files:
    pytest.skip('writing official .pth files needs torch')


def test_list_gives_each_name_with_its_published_file_on_one_line(capsys):
  assert 'mixmim_micro' not in table.RELEASES  # the stand-ins never outlive their test
  assert weights_cli.main(['list']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == len(table.RELEASES)
  for line, release in zip(lines, table.RELEASES.values()):
    assert line.split()[:2] == [release.name, release.file_name]
  assert {'mixmim_base_600ep', 'mae_vit_base_patch16', 'mae_vit_base_patch16_encoder',
          'mae_vit_base_patch16_finetuned', 'ummae_swin_tiny_256_finetuned',
          'simmim_swin_large_192_800ep'} <= set(table.RELEASES)


@pytest.mark.parametrize('name', ['mixmim_micro', 'ummae_swin_micro'])
def test_a_name_downloads_once_converts_once_and_loads_offline_after(server, files, monkeypatch,
                                                                     name):
  _need(files, table.RELEASES[name].file_name)
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', server.url)
  m = mixmae_jax.load(name)
  features = m.features(m.preprocess(_images()))
  assert features.shape == (4, m.encoder_config.embed_dim * 8)  # four stages, doubling
  assert np.all(np.isfinite(features))
  model, params = m  # still the (model, params) pair
  assert model is m.model and params is m.params
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', 'http://127.0.0.1:9')  # nothing listens there
  again = mixmae_jax.load(name)
  np.testing.assert_array_equal(again.features(again.preprocess(_images())), features)
  file_name = table.RELEASES[name].file_name
  assert server.requests == {file_name: 1}
  assert cache.pinned(file_name) == cache.sha256(os.path.join(cache.root(), file_name))


def _poisoned_torch(tmp_path) -> str:
  (tmp_path / 'poison' / 'torch').mkdir(parents=True)
  (tmp_path / 'poison' / 'torch' / '__init__.py').write_text(
      'raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n')
  return str(tmp_path / 'poison')


def test_mae_from_the_hub_needs_no_torch(server, tmp_path):
  pytest.importorskip('huggingface_hub')
  code = ('import sys, numpy as np, tiny_releases, mixmae_jax\n'
          'tiny_releases.register()\n'
          'm = mixmae_jax.load("mae_vit_micro_hf")\n'
          'f = m.features(m.preprocess(np.zeros((2, 70, 64, 3), np.uint8)))\n'
          'assert f.shape == (2, 16), f.shape\n'
          'assert "torch" not in sys.modules\n'
          'print("ok")\n')
  env = dict(os.environ, HF_ENDPOINT=server.url, HF_HUB_OFFLINE='0',
             HF_HOME=str(tmp_path / 'hf_home'),
             PYTHONPATH=os.pathsep.join([_poisoned_torch(tmp_path), str(REPO / 'tests'),
                                         str(REPO)]))
  env.pop('MIXMAE_JAX_MIRROR', None)
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-3000:]
  assert server.requests.get('tests/vit_micro.mae/resolve/main/model.safetensors', 0) >= 1


def test_a_file_placed_by_hand_is_used_with_no_server(files, monkeypatch, tmp_path):
  _need(files, 'mae_micro_full.pth')
  monkeypatch.setenv(cache.ENV, str(tmp_path / 'cache'))
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', 'http://127.0.0.1:9')  # nothing listens there
  (tmp_path / 'cache').mkdir()
  (tmp_path / 'cache' / 'mae_micro_full.pth').write_bytes(files['mae_micro_full.pth'])
  m = mixmae_jax.load('mae_vit_micro')
  out = m.reconstruct(m.preprocess(_images(2, 64)))
  assert out['predictions'].shape == out['originals'].shape == (2, 64, 64, 3)
  assert out['masks'].shape == (2, 16) and np.isfinite(out['loss'])
  assert cache.pinned('mae_micro_full.pth') is not None  # pinned at first use


def test_offline_the_error_names_the_address_and_where_to_put_the_file(monkeypatch, tmp_path):
  tiny_releases.register(monkeypatch)
  monkeypatch.setenv(cache.ENV, str(tmp_path / 'cache'))
  monkeypatch.delenv('MIXMAE_JAX_MIRROR', raising=False)
  with pytest.raises(weights.WeightsError) as error:
    mixmae_jax.load('mae_vit_micro')  # its URL is a closed port
  message = str(error.value)
  assert 'http://127.0.0.1:9/mae_micro_full.pth' in message
  assert str(tmp_path / 'cache' / 'mae_micro_full.pth') in message
  assert os.listdir(tmp_path / 'cache') == ['locks']  # no partial file left behind


def test_a_transfer_cut_short_leaves_nothing_and_the_next_load_works(server, files,
                                                                     monkeypatch):
  _need(files, 'mixmim_micro.pth')
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', server.url)
  server.cut_short.add('mixmim_micro.pth')
  with pytest.raises(weights.WeightsError, match='ended after'):
    mixmae_jax.load('mixmim_micro')
  assert sorted(os.listdir(cache.root())) == ['locks']
  assert mixmae_jax.load('mixmim_micro').kind == 'pretraining'
  assert server.requests['mixmim_micro.pth'] == 2


def test_a_download_with_the_wrong_hash_is_kept_aside_not_used(server, files, monkeypatch):
  _need(files, 'mixmim_micro.pth')
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', server.url)
  import dataclasses  # pylint: disable=import-outside-toplevel
  monkeypatch.setitem(table.RELEASES, 'mixmim_micro', dataclasses.replace(
      table.RELEASES['mixmim_micro'], sha256='0' * 64))
  with pytest.raises(weights.WeightsError, match='does not match its recorded SHA-256'):
    mixmae_jax.load('mixmim_micro')
  kept = [n for n in os.listdir(cache.root()) if '.damaged-' in n]
  assert len(kept) == 1 and not os.path.exists(cache.official_path('mixmim_micro.pth'))
  assert (pathlib.Path(cache.root()) / kept[0]).read_bytes() == files['mixmim_micro.pth']


def test_a_damaged_cached_file_is_set_aside_and_fetched_again(server, files, monkeypatch):
  _need(files, 'mixmim_micro.pth')
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', server.url)
  first = mixmae_jax.load('mixmim_micro')
  path = cache.official_path('mixmim_micro.pth')
  with open(path, 'r+b') as f:
    f.truncate(1000)  # a disk that lost the file's end
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(cache.converted_path('mixmim_micro'))
  again = mixmae_jax.load('mixmim_micro')
  assert server.requests['mixmim_micro.pth'] == 2
  assert [n for n in os.listdir(cache.root()) if n.startswith('mixmim_micro.pth.damaged-')]
  x = first.preprocess(_images())
  np.testing.assert_array_equal(first.features(x), again.features(x))


def test_a_damaged_converted_checkpoint_is_converted_again(server, files, monkeypatch):
  _need(files, 'mixmim_micro.pth')
  monkeypatch.setenv('MIXMAE_JAX_MIRROR', server.url)
  first = mixmae_jax.load('mixmim_micro')
  converted = pathlib.Path(cache.converted_path('mixmim_micro'))
  for f in converted.rglob('*'):
    if f.is_file() and f.stat().st_size > 1000:  # the arrays' data files
      f.write_bytes(b'\0' * f.stat().st_size)
  again = mixmae_jax.load('mixmim_micro')
  assert [p for p in converted.parent.iterdir() if p.name.startswith('mixmim_micro.damaged-')]
  x = first.preprocess(_images())
  np.testing.assert_array_equal(first.features(x), again.features(x))
  assert server.requests['mixmim_micro.pth'] == 1  # the official file was still good


def test_two_processes_loading_one_name_at_once_share_one_download(server, files, tmp_path):
  _need(files, 'mixmim_micro.pth')
  code = ('import tiny_releases, mixmae_jax\n'
          'tiny_releases.register()\n'
          'print(mixmae_jax.load("mixmim_micro").kind)\n')
  env = dict(os.environ, MIXMAE_JAX_MIRROR=server.url, MIXMAE_JAX_CACHE=cache.root(),
             PYTHONPATH=os.pathsep.join([str(REPO / 'tests'), str(REPO)]))
  runs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [r.communicate(timeout=300) for r in runs]
  for run, (out, err) in zip(runs, outs):
    assert run.returncode == 0 and out.strip() == 'pretraining', err[-3000:]
  assert server.requests['mixmim_micro.pth'] == 1
  assert sorted(os.listdir(cache.root())) == ['converted', 'locks', 'mixmim_micro.pth',
                                              'mixmim_micro.pth.sha256']


def test_an_unknown_name_suggests_the_close_ones():
  with pytest.raises(weights.WeightsError, match='Did you mean mae_vit_base_patch16'):
    mixmae_jax.load('mae_vit_bsae_patch16')
