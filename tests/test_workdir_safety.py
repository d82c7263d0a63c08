"""Faults around the workdir: two runs at once, stale leases, unwritable directories.

The run that holds a workdir keeps a lease with a heartbeat; a second one refuses and names the
holder; a dead holder's lease is taken over. An unwritable checkpoint directory stops the run
before anything compiles, cause first.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from mixmae_jax.training import workdir as run_workdir
from mixmae_jax.training.workdir import Lease, WorkdirError, WorkdirInUse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = 'configs/mixmae_swin_base_w14_600ep.py:runlocal'
UNWRITABLE = '/proc/self/fdinfo'  # no process may create files there, root included


def _write_lease(workdir, **record):
  os.makedirs(workdir, exist_ok=True)
  holder = {'host': socket.gethostname(), 'pid': os.getpid(), 'token': 'theirs',
            'started': 'earlier', 'heartbeat_unix': time.time()}
  holder.update(record)
  with open(os.path.join(workdir, 'lease.json'), 'w') as f:
    json.dump(holder, f)


def _dead_pid():
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def test_a_live_holder_is_named_and_the_second_run_refused(tmp_path):
  _write_lease(tmp_path, host='node-7', pid=4242)
  with pytest.raises(WorkdirInUse, match='in use by another run: pid 4242 on host node-7'):
    Lease(str(tmp_path)).acquire()
  assert json.loads((tmp_path / 'lease.json').read_text())['token'] == 'theirs'


@pytest.mark.parametrize('holder,reason', [
    (dict(pid='dead'), 'is gone'),
    (dict(host='node-7', heartbeat_unix=time.time() - 3600), 'heartbeat is'),
])
def test_a_stale_lease_is_taken_over_with_a_warning(tmp_path, caplog, holder, reason):
  if holder.get('pid') == 'dead':
    holder['pid'] = _dead_pid()
  _write_lease(tmp_path, **holder)
  lease = Lease(str(tmp_path))
  lease.acquire()
  assert 'taking over the lease' in caplog.text and reason in caplog.text
  assert json.loads((tmp_path / 'lease.json').read_text())['token'] == lease.record['token']
  lease.release()
  assert not (tmp_path / 'lease.json').exists()


def test_the_heartbeat_renews_and_a_taken_over_lease_is_left_alone(tmp_path):
  lease = Lease(str(tmp_path), heartbeat_seconds=0.05)
  lease.acquire()
  first = json.loads((tmp_path / 'lease.json').read_text())['heartbeat_unix']
  time.sleep(0.3)
  assert json.loads((tmp_path / 'lease.json').read_text())['heartbeat_unix'] > first
  _write_lease(tmp_path, host='node-7', token='newer')  # another run took it over meanwhile
  lease.release()
  assert json.loads((tmp_path / 'lease.json').read_text())['token'] == 'newer'


def test_an_unwritable_workdir_is_refused_with_the_cause(tmp_path):
  with pytest.raises(WorkdirError, match='cannot write to the workdir'):
    with run_workdir.claim(os.path.join(UNWRITABLE, 'run')):
      pass


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ('--xla_force_host_platform_device_count=1 '
                      '--xla_backend_optimization_level=0')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def test_an_unwritable_checkpoint_directory_fails_before_compiling(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'checkpoints').symlink_to(UNWRITABLE)
  started = time.monotonic()
  out = subprocess.run(
      [sys.executable, '-m', 'mixmae_jax.train', f'--config={RECIPE}', f'--workdir={workdir}'],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  elapsed = time.monotonic() - started
  assert out.returncode == 1
  errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert errors and errors[0].startswith(f'error: cannot write checkpoints to {workdir}')
  assert 'Traceback' not in out.stderr and 'first step' not in out.stderr
  assert elapsed < 120, elapsed  # imports and a few checks; nothing compiled, nothing waited
  status = json.loads((workdir / 'status.json').read_text())
  assert status['state'] == 'failed' and 'cannot write checkpoints' in status['error']
  assert not (workdir / 'lease.json').exists()
