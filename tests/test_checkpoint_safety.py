"""Faults injected into checkpoints: nothing is lost, and what went wrong is said clearly.

A damaged newest step (truncated, deleted or altered files, a missing manifest or meta, bit rot
the storage format does not notice) is set aside and training resumes from the step before;
`load()` falls back the same way without touching the workdir; a changed architecture is named
before any array is read; `convert` never writes into, or deletes from, a directory it did not
make.
"""
import glob
import json
import logging
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_pretraining_config, write_official_classifier

import mixmae_jax
from mixmae_jax import architectures
from mixmae_jax.interop import convert, pytorch_names
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining as train_loop
from mixmae_jax.training.architecture_match import ArchitectureMismatch
from mixmae_jax.training.checkpointing import CheckpointError


def _tiny_config(**overrides):
  return tiny_pretraining_config(**{'reconstruction_images': 0, 'log_every_steps': 2,
                                    'num_train_steps': 4, 'checkpoint_every_steps': 2,
                                    **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with checkpoints of steps 2 and 4 (copy it before changing anything)."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  train_loop.train_and_evaluate(_tiny_config(), str(workdir))
  return workdir


@pytest.fixture
def run(trained, tmp_path):
  shutil.copytree(trained, tmp_path / 'run')
  return tmp_path / 'run'


def _steps(workdir):
  return checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)),
                                    create=False).steps()


def _params_files(workdir, step):
  files = glob.glob(str(workdir / 'checkpoints' / str(step) / 'params' / '**' / 'd' / '*'),
                    recursive=True)
  return sorted(files, key=os.path.getsize, reverse=True)


def _truncate(workdir):
  path = _params_files(workdir, 4)[0]
  with open(path, 'r+b') as f:
    f.truncate(1000)


def _delete_data(workdir):
  os.remove(_params_files(workdir, 4)[0])


def _delete_manifest(workdir):
  os.remove(workdir / 'checkpoints' / '4' / 'params' / 'manifest.ocdbt')


def _delete_meta(workdir):
  shutil.rmtree(workdir / 'checkpoints' / '4' / 'meta')


def _older_params(workdir):
  """Well-formed files holding other values: step 2's params under step 4's name."""
  shutil.rmtree(workdir / 'checkpoints' / '4' / 'params')
  shutil.copytree(workdir / 'checkpoints' / '2' / 'params',
                  workdir / 'checkpoints' / '4' / 'params')


DAMAGE = {'truncated': _truncate, 'deleted_data': _delete_data,
          'no_manifest': _delete_manifest, 'no_meta': _delete_meta,
          'altered_values': _older_params}


def _raw_params(workdir, step):
  """Step `step`'s params as Orbax alone restores them: no checksums, no finiteness check."""
  model, _ = mixmae_jax.load(str(workdir), step=2)  # the architecture; step 2 is intact
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        architectures.abstract_params(model))
  manager = ocp.CheckpointManager(str(workdir / 'checkpoints'), item_names=checkpointing.ITEMS,
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    return manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))['params']
  finally:
    manager.close()


def test_a_damaged_newest_step_is_set_aside_and_training_resumes_before_it(run, caplog):
  _, before = mixmae_jax.load(str(run), step=2)
  _truncate(run)
  # A crash while appending also tears the metrics log's last line.
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 5, "loss": 0.9')
  caplog.set_level(logging.WARNING)
  train_loop.train_and_evaluate(_tiny_config(num_train_steps=6), str(run))
  assert _steps(run) == [2, 4, 6]  # step 4 trained again, not refused as existing
  aside = glob.glob(str(run / 'checkpoints' / '4.unreadable-*'))
  assert len(aside) == 1 and os.path.isdir(os.path.join(aside[0], 'params'))  # kept, not deleted
  assert 'moved the unreadable checkpoint step 4 aside' in caplog.text
  assert 'metrics.jsonl: left out 1 line(s)' in caplog.text
  records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 4, 6]
  _, again = mixmae_jax.load(str(run), step=2)  # the step it resumed from is untouched
  jax.tree.map(np.testing.assert_array_equal, before, again)
  assert json.loads((run / 'status.json').read_text())['state'] == 'finished'


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_load_falls_back_past_a_damaged_step_and_names_it(run, caplog, damage):
  _, good = mixmae_jax.load(str(run), step=2)
  DAMAGE[damage](run)
  caplog.set_level(logging.WARNING)
  _, params = mixmae_jax.load(str(run))
  jax.tree.map(np.testing.assert_array_equal, good, params)
  assert 'loaded step 2' in caplog.text and 'checkpoint step 4' in caplog.text
  assert _steps(run) == [2, 4]  # loading never moves anything
  with pytest.raises(CheckpointError, match=f'checkpoint step 4 in {run}/checkpoints'):
    mixmae_jax.load(str(run), step=4)
  if damage == 'altered_values':  # Orbax alone returns the wrong values without complaint
    raw = _raw_params(run, 4)
    jax.tree.map(np.testing.assert_array_equal, good, raw)
    with pytest.raises(CheckpointError, match='checksum mismatch'):
      mixmae_jax.load(str(run), step=4)


def test_zeroed_bytes_that_orbax_misses_are_caught_by_the_checksums(run):
  """Zero 4 KiB at offsets through the largest params file until Orbax itself restores without
  error but with changed values; that damage must not get past `load`."""
  _, good = mixmae_jax.load(str(run), step=4)
  path = _params_files(run, 4)[0]
  original = pathlib.Path(path).read_bytes()
  for offset in range(0, len(original) - 4096, len(original) // 32):
    damaged = original[:offset] + b'\0' * 4096 + original[offset + 4096:]
    pathlib.Path(path).write_bytes(damaged)
    try:
      raw = _raw_params(run, 4)
    except Exception:  # pylint: disable=broad-except  (Orbax noticed this one itself)
      continue
    if any(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), good, raw))):
      break
  else:
    pytest.skip('no offset gave silent corruption with this Orbax version')
  with pytest.raises(CheckpointError, match='checksum mismatch'):
    mixmae_jax.load(str(run), step=4)


def test_non_finite_params_are_reported_not_returned(run, tmp_path):
  model, params = mixmae_jax.load(str(run))
  params = jax.tree.map(np.asarray, params)
  params['decoder_pred']['bias'] = params['decoder_pred']['bias'].copy()
  params['decoder_pred']['bias'][3] = np.nan
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'nan' / 'checkpoints'), keep=None)
  ckpt.save(0, params, None, {'arch': architectures.to_dict(model.config)})
  ckpt.wait()
  ckpt.close()
  with pytest.raises(CheckpointError, match='NaN or infinite values: decoder_pred/bias'):
    mixmae_jax.load(str(tmp_path / 'nan'))


def test_load_has_one_kind_of_error_and_it_names_the_path(tmp_path):
  for path, message in ((tmp_path / 'missing', 'does not exist'),
                        (tmp_path, 'no checkpoint found')):
    with pytest.raises(CheckpointError, match=message):
      mixmae_jax.load(str(path))


def test_a_changed_architecture_is_named_before_any_array_is_read(run):
  records = {name: (run / name).read_bytes() for name in ('status.json', 'config.json')}
  with pytest.raises(ArchitectureMismatch,
                     match=r'encoder\.embed_dim: checkpoint 16, config 24.*new --workdir'):
    train_loop.train_and_evaluate(_tiny_config(**{'num_train_steps': 6,
                                                  'model.encoder.embed_dim': 24}), str(run))
  assert _steps(run) == [2, 4] and not glob.glob(str(run / 'checkpoints' / '*.unreadable-*'))
  # Refused before writing anything: the run's records are as the finished run left them.
  assert {name: (run / name).read_bytes() for name in records} == records
  assert json.loads(records['status.json'])['state'] == 'finished'


def test_a_change_that_keeps_every_shape_resumes_with_a_warning(run, caplog):
  caplog.set_level(logging.WARNING)
  train_loop.train_and_evaluate(_tiny_config(**{'num_train_steps': 6,
                                                'model.objective.mask_ratio': 0.25}), str(run))
  assert 'mask_ratio: checkpoint 0.5, config 0.25' in caplog.text and _steps(run)[-1] == 6


def test_convert_refuses_a_workdir_and_leaves_it_whole(run, tmp_path, capsys):
  fake = tmp_path / 'model.pth'
  fake.write_bytes(b'not read: the destination is checked first')
  assert convert.main([str(fake), str(run), '--arch', 'mixmim_base']) == 1
  err = capsys.readouterr().err
  assert 'is not empty' in err and '--overwrite' in err
  assert _steps(run) == [2, 4]
  # Exporting to a directory is refused before anything is read or written.
  assert convert.main([str(run), str(tmp_path)]) == 1
  assert 'is a directory' in capsys.readouterr().err


def test_convert_overwrite_moves_the_old_checkpoints_aside(run, tmp_path, capsys):
  arch = write_official_classifier(tmp_path / 'ft.pth')
  args = [str(tmp_path / 'ft.pth'), str(run), '--arch', 'mixmim_base']
  assert convert.main(args + ['--overwrite']) == 0
  replaced = glob.glob(str(run / 'checkpoints.replaced-*'))
  assert len(replaced) == 1
  assert checkpointing.Checkpointer(replaced[0], create=False).steps() == [2, 4]
  assert _steps(run) == [0] and mixmae_jax.load(str(run))[0].config == arch
  assert convert.main(args) == 1 and 'is not empty' in capsys.readouterr().err  # no raw error


def test_exporting_over_an_existing_file_is_refused_and_overwrite_keeps_it_aside(run, tmp_path,
                                                                                 capsys):
  torch = pytest.importorskip('torch')
  official = tmp_path / 'mixmim_base_600ep.pth'
  official.write_bytes(b'an official weights file the user downloaded')
  assert convert.main([str(run), str(official)]) == 1  # the README's arguments swapped
  err = capsys.readouterr().err
  assert 'already exists' in err and '--overwrite' in err and 'Traceback' not in err
  assert official.read_bytes() == b'an official weights file the user downloaded'
  assert convert.main([str(run), str(official), '--overwrite']) == 0
  kept = glob.glob(str(official) + '.replaced-*')
  assert len(kept) == 1
  assert pathlib.Path(kept[0]).read_bytes() == b'an official weights file the user downloaded'
  assert 'model' in torch.load(official, weights_only=True)
  assert not glob.glob(str(official) + '.partial-*')


def test_a_fixed_table_with_other_values_says_by_how_much():
  buffer_difference = pytorch_names.buffer_difference
  want = np.zeros((1, 256, 512), np.float32)
  got = want.copy()
  got[0, :3, 0] = 0.5
  message = buffer_difference('decoder_pos_embed', got, want)
  assert 'has the architecture\'s shape but other values: 3 of 131072 differ, by up to 0.5' in \
      message
  assert 'shape (1, 256, 512), the architecture\'s (1, 128, 512)' not in message
  assert buffer_difference('decoder_pos_embed', want[:, :128], want).endswith(
      "has shape (1, 128, 512), the architecture's (1, 256, 512)")
  assert buffer_difference('decoder_pos_embed', want, want) == ''
