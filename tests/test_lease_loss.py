"""A run frozen past its lease's stale time, whose workdir another run took over, stops before
its next write; lease records with wrong types or a clock ahead are read without a traceback.

The frozen run is a real `train` process stopped with SIGSTOP and continued with SIGCONT.
"""
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import cli_env, error_lines, train_command, wait_for

import mixmae_jax
from mixmae_jax.training.workdir import Lease, LeaseLost, WorkdirInUse
from mixmae_jax.training import checkpointing

# A fast lease so the test need not wait two minutes: renewed every 0.5 s, stale after 4 s.
LEASE = ['--config.lease_heartbeat_seconds=0.5', '--config.lease_stale_seconds=4']
# Saves every 50 steps: the run is frozen soon after one commits, with no save in flight (see
# the test below for a save in flight).
FLAGS = ['--config.num_train_steps=100', '--config.log_every_steps=1',
         '--config.checkpoint_every_steps=50', '--config.reconstruction_images=0',
         '--config.keep_checkpoints=2', *LEASE]


def _records(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _status_step(workdir):
  try:
    return json.loads((workdir / 'status.json').read_text())['step']
  except (OSError, ValueError, KeyError):
    return None


def _steps(workdir):
  return checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)),
                                    create=False).steps()


RECORDS = ('metrics.jsonl', 'status.json', 'config.json')


def _freeze_and_take_over(workdir, flags, ready):
  """Start a run, freeze it (SIGSTOP: a VM pause, a scheduler's suspend, an NFS stall) once
  `ready()`, let a second run take the workdir over and finish, then continue the first.
  Returns (the first run's exit code and stderr, the records and steps the second left)."""
  first = subprocess.Popen(train_command(workdir, flags), env=cli_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(ready, first)
    first.send_signal(signal.SIGSTOP)
    # a run that finished before the freeze tests nothing: its steps must outlast the poll
    assert first.poll() is None, 'the first run ended before it could be frozen'
    time.sleep(5)  # past the stale time
    second = subprocess.run(train_command(workdir, flags), env=cli_env(), capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'taking over the lease' in second.stderr
    left = ({name: (workdir / name).read_bytes() for name in RECORDS}, _steps(workdir))
    first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
  finally:
    if first.poll() is None:
      first.kill()
  return first.returncode, stderr, left


def test_a_frozen_run_that_lost_its_lease_stops_before_its_next_write(tmp_path):
  code, stderr, (records, steps) = _freeze_and_take_over(
      tmp_path, FLAGS, lambda: _status_step(tmp_path) == 50)
  assert code == 1
  errors = error_lines(stderr)
  assert len(errors) == 1 and 'took over' in errors[0] and str(tmp_path) in errors[0], stderr
  # Nothing the first run could have written after its continuation changed the workdir.
  assert {name: (tmp_path / name).read_bytes() for name in RECORDS} == records
  assert _steps(tmp_path) == steps == [50, 100]
  assert [r['step'] for r in _records(tmp_path)] == list(range(1, 101))  # one record per step
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status["state"], status["step"]) == ("finished", 100)
  for step in steps:
    mixmae_jax.load(str(tmp_path), step=step)


def _write_lease(workdir, record):
  os.makedirs(workdir, exist_ok=True)
  (workdir / 'lease.json').write_text(json.dumps(record))


@pytest.mark.parametrize('record', [
    {'host': 'node-7', 'pid': [1, 2], 'heartbeat_unix': 'yesterday'},
    {'host': 7, 'pid': None, 'heartbeat_unix': None, 'token': {}},
    ['not', 'an', 'object'],
    {'host': 'node-7', 'heartbeat_unix': float('nan')},
])
def test_a_lease_record_with_wrong_types_is_as_old_as_its_file(tmp_path, record):
  _write_lease(tmp_path, record)
  with pytest.raises(WorkdirInUse, match='in use by another run'):  # a fresh file: live
    Lease(str(tmp_path)).acquire()
  old = time.time() - 3600
  os.utime(tmp_path / 'lease.json', (old, old))
  lease = Lease(str(tmp_path))
  lease.acquire()  # an hour-old file: stale, taken over
  lease.release()


def test_a_heartbeat_from_a_clock_ahead_says_so(tmp_path):
  _write_lease(tmp_path, {'host': 'node-7', 'pid': 4242, 'token': 'theirs',
                          'heartbeat_unix': time.time() + 3600})
  with pytest.raises(WorkdirInUse) as error:
    Lease(str(tmp_path)).acquire()
  assert "ahead of this host's clock" in str(error.value) and ' ago' not in str(error.value)
  assert ' -3' not in str(error.value)


def test_a_lease_taken_over_is_noticed_before_the_next_write(tmp_path):
  lease = Lease(str(tmp_path), heartbeat_seconds=60)
  lease.acquire()
  lease.require()
  _write_lease(tmp_path, {'host': socket.gethostname(), 'pid': 1, 'token': 'newer',
                          'heartbeat_unix': time.time()})
  with pytest.raises(LeaseLost, match='took over'):
    lease.require()
  lease.release()
  assert json.loads((tmp_path / 'lease.json').read_text())['token'] == 'newer'


def test_a_run_frozen_with_a_save_in_flight_stops_as_having_lost_its_lease(tmp_path):
  """Frozen while a save is being written; the run that takes over clears the unfinished files
  at its start, so the frozen run's save fails when it continues: it must say that its lease
  was lost (the cause), leave the other run's steps alone, and write nothing else."""
  # 120 steps: enough that the first run cannot finish between step 4's save and the freeze,
  # even on a loaded machine
  flags = ['--config.num_train_steps=120', '--config.log_every_steps=1',
           '--config.checkpoint_every_steps=2', '--config.reconstruction_images=0',
           '--config.keep_checkpoints=2', *LEASE]
  code, stderr, (records, _) = _freeze_and_take_over(
      tmp_path, flags, lambda: (tmp_path / 'checkpoints' / '4').is_dir())
  assert code == 1
  errors = error_lines(stderr)
  assert len(errors) == 1 and 'took over' in errors[0], stderr[-3000:]
  assert {name: (tmp_path / name).read_bytes() for name in RECORDS} == records
  assert _steps(tmp_path)[-2:] == [118, 120]
  for step in _steps(tmp_path):
    mixmae_jax.load(str(tmp_path), step=step)
