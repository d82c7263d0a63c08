"""launch/tpu_pod.sh against a stand-in `gcloud` that runs the workers' commands here: it ships
the working tree (uncommitted edits and new files, not ignored ones) and says so, and a second
launch stops the run the first one started before starting its own."""
import os
import pathlib
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

FAKE_GCLOUD = r'''#!/usr/bin/env bash
# gcloud compute tpus tpu-vm {ssh,scp} ...: one local "worker" under $FAKE_ROOT.
set -euo pipefail
verb=$4
if [[ $verb == scp ]]; then
  cp "$5" "$FAKE_ROOT/shipped.tar.gz"; exit 0
fi
for arg in "$@"; do
  if [[ $arg == --command=* ]]; then
    command=${arg#--command=}
    command=${command//\/tmp\/mixmae_jax.tar.gz/$FAKE_ROOT/shipped.tar.gz}
    echo "$command" >> "$FAKE_ROOT/commands.log"
    HOME=$FAKE_ROOT/home bash -c "$command"
  fi
done
'''

# Stands in for the training process on the worker: runs until SIGTERM, then says so.
FAKE_PYTHON = r'''#!/usr/bin/env bash
trap 'echo "$$ stopped by SIGTERM" >> "$FAKE_ROOT/runs.log"; exit 75' TERM
echo "$$ started: $*" >> "$FAKE_ROOT/runs.log"
while true; do sleep 0.1; done
'''


def _git(repo, *args):
  subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
  repo = tmp_path / 'checkout'
  (repo / 'launch').mkdir(parents=True)
  shutil.copy(REPO / 'launch' / 'tpu_pod.sh', repo / 'launch' / 'tpu_pod.sh')
  (repo / 'configs').mkdir()
  (repo / 'configs' / 'run.py').write_text('committed = True\n')
  (repo / '.gitignore').write_text('*.log\n')
  _git(repo, 'init', '-q')
  _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'add', '.')
  _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'start')
  (repo / 'configs' / 'run.py').write_text('committed = False  # edited, not committed\n')
  (repo / 'configs' / 'new.py').write_text('new = True\n')
  (repo / 'debug.log').write_text('ignored\n')
  return repo


def _launch(checkout, root):
  env = dict(os.environ, FAKE_ROOT=str(root), SKIP_INSTALL='1', REPO_DIR=str(root / 'worker'),
             PATH=f'{root / "bin"}{os.pathsep}{os.environ["PATH"]}')
  return subprocess.run(['bash', str(checkout / 'launch' / 'tpu_pod.sh'), 'pod', 'zone',
                         'configs/run.py', 'gs://bucket/run', '--config.seed=3'],
                        env=env, capture_output=True, text=True, timeout=120, check=True)


def _pid(root):
  return int((root / 'home' / 'mixmae_train.pid').read_text())


def _wait_for(predicate, timeout=20):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline
    time.sleep(0.05)


def test_the_pod_launcher_ships_the_working_tree_and_replaces_its_earlier_run(checkout, tmp_path):
  root = tmp_path / 'fake'
  (root / 'bin').mkdir(parents=True)
  (root / 'home').mkdir()
  for name, text in (('gcloud', FAKE_GCLOUD), ('python3', FAKE_PYTHON)):
    (root / 'bin' / name).write_text(text)
    (root / 'bin' / name).chmod(0o755)
  pids = []
  try:
    out = _launch(checkout, root)
    assert 'changes not committed' in out.stdout
    assert 'M configs/run.py' in out.stdout and '?? configs/new.py' in out.stdout
    with tarfile.open(root / 'shipped.tar.gz') as archive:
      names = set(archive.getnames())
      shipped = archive.extractfile('configs/run.py').read().decode()
    assert {'configs/run.py', 'configs/new.py', 'launch/tpu_pod.sh'} <= names
    assert 'debug.log' not in names and 'edited, not committed' in shipped
    assert (root / 'worker' / 'configs' / 'new.py').exists()
    _wait_for(lambda: (root / 'home' / 'mixmae_train.pid').exists())
    pids.append(_pid(root))
    _wait_for(lambda: (root / 'runs.log').exists() and 'started' in (root / 'runs.log').read_text())
    assert '--config.seed=3' in (root / 'runs.log').read_text()

    out = _launch(checkout, root)  # a relaunch: the first run is stopped, then a new one starts
    assert f'stopping the earlier run (pid {pids[0]})' in out.stdout
    _wait_for(lambda: _pid(root) != pids[0])
    pids.append(_pid(root))
    _wait_for(lambda: f'{pids[1]} started' in (root / 'runs.log').read_text())
    log = (root / 'runs.log').read_text()
    assert f'{pids[0]} stopped by SIGTERM' in log
    assert log.index(f'{pids[0]} stopped') < log.index(f'{pids[1]} started')
  finally:
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
