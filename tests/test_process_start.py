"""How a training process starts: multi-process flags, clusters JAX joins by itself, peers that
never come, and mistyped config fields; each mistake is one clear message, never a silent
single-process run or a traceback."""
import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from mixmae_jax.training import distributed, peer_watch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = 'configs/mixmae_swin_base_w14_600ep.py:runlocal'


def _train(tmp_path, *flags, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'mixmae_jax.train', f'--config={RECIPE}',
                         f'--workdir={tmp_path / "run"}', *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_a_count_and_id_without_a_coordinator_is_an_error_not_a_lone_run(tmp_path):
  out = _train(tmp_path, '--num_processes=2', '--process_id=1')
  assert out.returncode == 1
  assert ('error: --num_processes=2 --process_id=1 without --coordinator_address: this process '
          'would train alone') in out.stderr
  assert 'Traceback' not in out.stderr and not (tmp_path / 'run').exists()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('process_id,waiting', [
    (0, 'process 0 of 2 (the coordinator, at {address}) waiting for process 1'),
    (1, 'process 1 of 2 waiting for the coordinator (process 0) at {address}'),
])
def test_peers_that_never_come_are_named_and_the_wait_ends(tmp_path, process_id, waiting):
  address = f'127.0.0.1:{_free_port()}'
  started = time.monotonic()
  out = _train(tmp_path, f'--coordinator_address={address}', '--num_processes=2',
               f'--process_id={process_id}', '--initialization_timeout=4')
  assert out.returncode == 1
  assert waiting.format(address=address) in out.stderr  # said before waiting
  assert 'not all processes joined within 4 s (--initialization_timeout)' in out.stderr
  assert f'--coordinator_address={address} --num_processes=2' in out.stderr  # what to check
  assert time.monotonic() - started < 90


@pytest.mark.parametrize('flags,message', [
    (dict(coordinator_address='h:1'), 'needs --num_processes and --process_id'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=2), 'must lie in [0,'),
    (dict(num_processes=0), 'must be at least 1'),
    (dict(process_id=0), 'without --coordinator_address'),
])
def test_inconsistent_flags_are_refused(flags, message):
  with pytest.raises(distributed.DistributedSetupError, match=message.replace('[', r'\[')):
    distributed.initialize(**flags)


CLUSTERS = {
    'SLURM': dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='node[1-2]', SLURM_NTASKS='2',
                  SLURM_PROCID='1', SLURM_LOCALID='0'),
    'Open MPI': dict(OMPI_MCA_orte_hnp_uri='1.0;tcp://10.0.0.1:4242', OMPI_COMM_WORLD_SIZE='4'),
    'Kubernetes': dict(KUBERNETES_SERVICE_HOST='10.0.0.9', JOB_COMPLETION_INDEX='3'),
    'TPU pod slice': dict(TPU_WORKER_HOSTNAMES='w0,w1'),
}
CLUSTER_VARS = sorted({k for env in CLUSTERS.values() for k in env} |
                      {'MEGASCALE_COORDINATOR_ADDRESS'})


@pytest.fixture
def calls(monkeypatch):
  """jax.distributed.initialize replaced by a recorder; no cluster variables set."""
  for name in CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)
  recorded = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: recorded.append(kw))
  monkeypatch.setattr(jax.config, 'update', lambda *a: None)
  return recorded


@pytest.mark.parametrize('cluster', sorted(CLUSTERS))
def test_clusters_jax_can_join_by_itself_need_no_flags(monkeypatch, calls, cluster):
  for name, value in CLUSTERS[cluster].items():
    monkeypatch.setenv(name, value)
  assert distributed.detected_cluster() == cluster
  distributed.initialize(timeout_seconds=5)
  assert calls == [dict(coordinator_address=None, num_processes=None, process_id=None,
                        initialization_timeout=65,
                        heartbeat_timeout_seconds=peer_watch.jax_heartbeat(60.0))]
  calls.clear()
  distributed.initialize(num_processes=1)  # run alone even there
  assert not calls


def test_one_process_outside_a_cluster_starts_nothing(monkeypatch, calls):
  monkeypatch.setenv('SLURM_NTASKS', '1')  # a single-task SLURM job is not a multi-process run
  assert distributed.detected_cluster() is None
  distributed.initialize()
  assert not calls


def test_an_unknown_config_field_is_one_line_with_the_likely_field(tmp_path):
  out = _train(tmp_path, '--config.model.embed_dim=96')
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  assert out.stderr.splitlines() == [
      f'error: --config.model.embed_dim: the config {RECIPE} has no field \'model.embed_dim\'. '
      f'Did you mean model.encoder.embed_dim?']


def _spawn(workdir, *flags, devices=1):
  from conftest import cli_env, train_command  # pylint: disable=import-outside-toplevel
  return subprocess.Popen(train_command(workdir, flags), cwd=REPO, env=cli_env(devices),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_two_processes_given_id_0_are_told_so(tmp_path):
  address = f'127.0.0.1:{_free_port()}'
  flags = (f'--coordinator_address={address}', '--num_processes=2', '--process_id=0',
           '--initialization_timeout=20')
  first = _spawn(tmp_path / 'a', *flags)
  try:
    time.sleep(8)  # the first one serves the coordinator by now
    second = _train(tmp_path, *flags, timeout=120)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 1 and 'Traceback' not in second.stderr, second.stderr[-3000:]
  lines = [line for line in second.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and f'cannot serve as the coordinator at {address}' in lines[0]
  assert 'given --process_id=0' in lines[0]


def test_a_peer_killed_mid_run_ends_the_survivor_promptly_with_status_failed(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  from conftest import wait_for  # pylint: disable=import-outside-toplevel
  address = f'127.0.0.1:{_free_port()}'
  workdir = tmp_path / 'run'
  flags = ['--config.num_train_steps=100000', '--config.log_every_steps=1',
           '--config.checkpoint_every_steps=2', '--config.reconstruction_images=0',
           f'--coordinator_address={address}', '--num_processes=2', '--peer_timeout=6']
  procs = [_spawn(workdir, *flags, f'--process_id={i}', devices=2) for i in range(2)]
  try:
    wait_for(lambda: (workdir / 'checkpoints' / '2').is_dir(), procs[0], timeout=400)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = procs[0].communicate(timeout=120)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode == 1, stderr[-3000:]
  assert time.monotonic() - killed_at < 60
  lines = [line for line in stderr.splitlines() if line.startswith('error:')]
  assert lines and 'process(es) [1]' in lines[-1] and '--peer_timeout' in lines[-1]
  assert 'Check failure' not in stderr
  status = json.loads((workdir / 'status.json').read_text())
  assert status['state'] == 'failed' and 'process(es) [1]' in status['error']
  assert not (workdir / 'lease.json').exists()
