"""Saves that fail or are cut short: a full disk under a background save, status.json while
saves are in flight, a failed save's report on the command line.

A full filesystem is simulated by Orbax's save raising ENOSPC for one step.
"""
import errno
import json
import os
import subprocess
import sys
import threading
import time

import orbax.checkpoint as ocp
import pytest
from conftest import (REPO, cli_env, error_lines, tiny_pretraining_config, train_command,
                      write_official_classifier)

import mixmae_jax
from mixmae_jax.training import checkpointing
from mixmae_jax.training import pretraining as train_loop


def _config(**overrides):
  base = dict(num_train_steps=16, log_every_steps=1, checkpoint_every_steps=4,
              reconstruction_images=0)
  base.update(overrides)
  return tiny_pretraining_config(**base)


def _records(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _steps(workdir):
  return checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)),
                                    create=False).steps()


def _full_disk_at(monkeypatch, failing_step):
  original = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == failing_step:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)


def test_a_full_disk_under_a_background_save_stops_the_run_at_the_next_step(tmp_path,
                                                                            monkeypatch):
  _full_disk_at(monkeypatch, 8)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'could not write checkpoint step 8 to .*No space left on device'):
    train_loop.train_and_evaluate(_config(), str(tmp_path))
  # Reported within a step or two, not at the next save (step 12) as before.
  assert max(r['step'] for r in _records(tmp_path)) <= 10
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status['state'], status['step']) == ('failed', 4)  # never the step that failed
  assert _steps(tmp_path) == [4]
  mixmae_jax.load(str(tmp_path), step=4)


def test_status_names_only_steps_that_are_on_storage(tmp_path, monkeypatch):
  original = ocp.CheckpointManager.save

  def slow(self, step, *args, **kwargs):
    time.sleep(0.3)  # a slow disk: the loop goes on while the save is in flight
    return original(self, step, *args, **kwargs)

  poll = checkpointing.Checkpointer.poll

  def slower_steps(self):
    # Eight steps outlast a save whatever the machine's load, so saves commit while the run
    # goes on (on a fast, idle machine every commit could otherwise wait for the last step).
    time.sleep(0.1)
    return poll(self)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', slow)
  monkeypatch.setattr(checkpointing.Checkpointer, 'poll', slower_steps)
  seen, done = [], threading.Event()

  def watch():
    while not done.is_set():
      try:
        step = json.loads((tmp_path / 'status.json').read_text())['step']
      except (OSError, ValueError, KeyError):
        continue
      if step is not None:
        seen.append((step, (tmp_path / 'checkpoints' / str(step)).is_dir()))
      time.sleep(0.005)

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    # Every step kept: rotation may remove an older step that the status, noticing commits
    # within a second, still names for that second; here only what is named before any
    # commit is in question.
    train_loop.train_and_evaluate(_config(num_train_steps=48, checkpoint_every_steps=8,
                                          keep_checkpoints=100), str(tmp_path))
  finally:
    done.set()
    watcher.join()
  assert seen and all(on_storage for _, on_storage in seen), seen
  named = {step for step, _ in seen}
  assert named <= set(range(8, 49, 8)) and 48 in named and len(named) >= 2, named


def test_the_command_prints_one_line_and_keeps_the_detail_in_a_log(tmp_path):
  script = ('import errno, os, sys\n'
            'import orbax.checkpoint as ocp\n'
            'original = ocp.CheckpointManager.save\n'
            'def save(self, step, *a, **k):\n'
            '  if step == 4:\n'
            '    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n'
            '  return original(self, step, *a, **k)\n'
            'ocp.CheckpointManager.save = save\n'
            'from mixmae_jax.training import entry_point, pretraining\n'
            'sys.argv = sys.argv[:1] + sys.argv[2:]\n'
            'entry_point.run_cli(pretraining.train_and_evaluate, "workdir")\n')
  flags = ['--config.num_train_steps=12', '--config.checkpoint_every_steps=2',
           '--config.reconstruction_images=0']
  out = subprocess.run([sys.executable, '-c', script] + train_command(tmp_path, flags)[2:],
                       cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 1
  errors = error_lines(out.stderr)
  assert len(errors) == 1, out.stderr[-3000:]
  assert 'could not write checkpoint step 4' in errors[0]
  assert 'No space left on device' in errors[0] and 'errors.log' in errors[0]
  assert 'Traceback' not in out.stderr and 'Event loop is closed' not in out.stderr
  assert 'OSError' in (tmp_path / 'errors.log').read_text()
  assert _steps(tmp_path) == [2]


def test_convert_on_a_full_disk_is_one_line(tmp_path):
  write_official_classifier(tmp_path / 'ft.pth')
  script = ('import errno, os, sys\n'
            'import orbax.checkpoint as ocp\n'
            'def full(self, step, *a, **k):\n'
            '  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n'
            'ocp.CheckpointManager.save = full\n'
            'from mixmae_jax.interop import convert\n'
            'sys.exit(convert.main(sys.argv[1:]))\n')
  out = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'ft.pth'),
                        str(tmp_path / 'out'), '--arch', 'mixmim_base'], cwd=REPO,
                       env=cli_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  errors = error_lines(out.stderr)
  assert len(errors) == 1 and 'No space left on device' in errors[0], out.stderr[-3000:]
  assert 'Traceback' not in out.stderr and len(out.stderr.splitlines()) < 20, out.stderr
