"""The real training loop end to end, in-process and as the CLI a user runs.

Covers: outputs (checkpoint, metrics.jsonl, TensorBoard, PNGs), exact resume after SIGKILL,
clean stop on SIGTERM, non-finite loss handling, restoring on another device count, a bad-files
image folder, and two processes training together over 127.0.0.1.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_pretraining_config
from PIL import Image

from mixmae_jax.training import checkpointing, step_metrics
from mixmae_jax.training import pretraining as train_loop

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = 'configs/mixmae_swin_base_w14_600ep.py:runlocal'


def _tiny_config(**overrides):
  return tiny_pretraining_config(**overrides)


def _metrics(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_short_run_writes_checkpoint_metrics_events_and_pictures(tmp_path):
  config = _tiny_config(num_train_steps=6, log_every_steps=2, checkpoint_every_steps=3,
                        reconstruction_every_steps=3)
  train_loop.train_and_evaluate(config, str(tmp_path))
  records = _metrics(tmp_path)
  assert [r['step'] for r in records] == [2, 4, 6]
  assert {'loss', 'lr', 'grad_norm', 'images_per_sec', 'epoch'} <= set(records[0])
  assert all(np.isfinite(r['loss']) for r in records)
  assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path))).steps() == [3, 6]
  pictures = sorted(p.name for p in (tmp_path / 'reconstructions').iterdir())
  assert pictures == ['step_0000003.png', 'step_0000006.png']
  width, height = Image.open(tmp_path / 'reconstructions' / pictures[0]).size
  assert width > 3 * 64 and height >= 2 * 64
  tf = pytest.importorskip('tensorflow')
  tags = {value.tag for events in (tmp_path / 'tensorboard').iterdir()
          for event in tf.compat.v1.train.summary_iterator(str(events))
          for value in event.summary.value}
  assert {'loss', 'grad_norm', 'reconstructions'} <= tags  # scalars and the pictures
  step, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(tmp_path)))
  assert step == 6 and meta['arch']['encoder']['img_size'] == 64
  assert meta['data_positions'] == [6 * 16]
  assert json.loads((tmp_path / 'config.json').read_text())['num_train_steps'] == 6
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status['state'], status['step'], status['exit_code']) == ('finished', 6, 0)
  assert not (tmp_path / 'lease.json').exists()


def test_non_finite_loss_stops_without_touching_the_good_checkpoint(tmp_path):
  train_loop.train_and_evaluate(
      _tiny_config(num_train_steps=4, log_every_steps=1, checkpoint_every_steps=2), str(tmp_path))
  bad = _tiny_config(num_train_steps=8, log_every_steps=4, checkpoint_every_steps=1,
                     base_lr=1e30, warmup_steps=0)
  with pytest.raises(step_metrics.NonFiniteLoss, match='at step 5'):
    train_loop.train_and_evaluate(bad, str(tmp_path))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)))
  assert ckpt.latest_step() == 4


def test_a_checkpoint_restores_on_another_device_count(tmp_path):
  train_loop.train_and_evaluate(_tiny_config(num_train_steps=4, checkpoint_every_steps=4),
                                str(tmp_path))
  # continue the 8-device run's checkpoint in a one-device process
  _run_cli(tmp_path, ['--config.num_train_steps=6', '--config.batch_size=16'], devices=1)
  assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path))).steps()[-1] == 6


def _env(devices):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                      '--xla_backend_optimization_level=0')
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _command(workdir, flags):
  return [sys.executable, '-m', 'mixmae_jax.train', f'--config={RECIPE}', f'--workdir={workdir}',
          *flags]


def _run_cli(workdir, flags, devices=1):
  out = subprocess.run(_command(workdir, flags), cwd=REPO, env=_env(devices), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    assert process.poll() is None, process.stderr.read()[-3000:]
    time.sleep(0.02)
  raise TimeoutError


RESUME_FLAGS = ['--config.num_train_steps=40', '--config.log_every_steps=1',
                '--config.checkpoint_every_steps=5', '--config.reconstruction_images=0']


def test_sigkill_and_restart_reproduces_the_uninterrupted_losses(tmp_path):
  _run_cli(tmp_path / 'straight', RESUME_FLAGS)
  killed = tmp_path / 'killed'
  process = subprocess.Popen(_command(killed, RESUME_FLAGS), cwd=REPO, env=_env(1),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: (killed / 'checkpoints' / '10').is_dir(), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  interrupted_at = max(r['step'] for r in _metrics(killed))
  assert interrupted_at < 40
  _run_cli(killed, RESUME_FLAGS)
  straight, resumed = _metrics(tmp_path / 'straight'), _metrics(killed)
  assert [r['step'] for r in resumed] == list(range(1, 41))
  assert [r['loss'] for r in resumed] == [r['loss'] for r in straight]
  assert [r['grad_norm'] for r in resumed] == [r['grad_norm'] for r in straight]


def test_a_second_run_is_refused_and_sigterm_saves_and_exits_as_preempted(tmp_path):
  """A requeued job racing the old one on the same workdir is refused, naming the holder; the
  old one goes on, and SIGTERM makes it save and exit with the documented code."""
  flags = ['--config.num_train_steps=100000', '--config.warmup_steps=2',
           '--config.checkpoint_every_steps=100000', '--config.log_every_steps=1',
           '--config.reconstruction_images=0']
  process = subprocess.Popen(_command(tmp_path, flags), cwd=REPO, env=_env(1),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: (tmp_path / 'metrics.jsonl').exists() and len(_metrics(tmp_path)) >= 3,
            process)
  second = subprocess.run(_command(tmp_path, flags), cwd=REPO, env=_env(1), capture_output=True,
                          text=True, timeout=300)
  assert second.returncode == 1
  assert f'is in use by another run: pid {process.pid} on host' in second.stderr
  assert 'Traceback' not in second.stderr
  logged = len(_metrics(tmp_path))
  _wait_for(lambda: len(_metrics(tmp_path)) > logged, process)  # the first run goes on
  assert json.loads((tmp_path / 'status.json').read_text())['state'] == 'running'
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 75  # preempted: rerun to resume
  steps = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path))).steps()
  assert len(steps) == 1 and steps[0] >= 3
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status['state'], status['step'], status['exit_code']) == ('preempted', steps[0], 75)
  assert not (tmp_path / 'lease.json').exists()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_together_over_localhost(tmp_path):
  """Saves every second step: each background save meets the other process from its writer
  thread while the next steps run their collectives (a deadlock when both used the devices)."""
  port = _free_port()
  flags = ['--config.num_train_steps=6', '--config.log_every_steps=2',
           '--config.checkpoint_every_steps=2', f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2']
  procs = [subprocess.Popen(_command(tmp_path, flags + [f'--process_id={i}']), cwd=REPO,
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert '4 devices on 2 hosts' in outs[0][1]
  assert [r['step'] for r in _metrics(tmp_path)] == [2, 4, 6]
  status = json.loads((tmp_path / 'status.json').read_text())
  assert (status['state'], status['step']) == ('finished', 6)
  _, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(tmp_path)))
  assert meta['process_count'] == 2 and len(meta['data_positions']) == 2


BAD_FILES = ['empty.jpg', 'noise.jpg', 'notes.jpg']


def _bad_files_folder(root: pathlib.Path, good: int = 16) -> None:
  """18 good images (an RGBA WebP among them) and 3 undecodable files, reached again through
  links: one to the folder's parent, two to one sub-folder (each must be listed once)."""
  rng = np.random.default_rng(0)
  (root / 'sub').mkdir(parents=True)
  for i in range(good):
    pixels = (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / ('sub' if i % 2 else '.') / f'good_{i}.jpg')
  Image.fromarray((rng.random((30, 30)) * 255).astype(np.uint8)).save(root / 'gray.jpg')
  Image.fromarray((rng.random((36, 36, 4)) * 255).astype(np.uint8)).save(root / 'alpha.webp')
  (root / 'empty.jpg').write_bytes(b'')
  (root / 'noise.jpg').write_bytes(rng.bytes(500))
  (root / 'notes.jpg').write_text('not an image')
  (root / 'sub' / 'up').symlink_to('..')
  (root / 'again').symlink_to('sub')
  (root / 'and_again').symlink_to('sub')


def test_a_folder_with_undecodable_files_trains_and_counts_each_once(tmp_path):
  """21 files, 3 of them bad, read for several epochs and across a resume: 3 skipped, named."""
  folder = tmp_path / 'images'
  _bad_files_folder(folder)
  flags = [f'--config.data.image_folder={folder}', '--config.num_train_steps=6',
           '--config.log_every_steps=3', '--config.checkpoint_every_steps=3']
  out = _run_cli(tmp_path / 'run', flags)
  assert '3 undecodable file(s) skipped so far' in out.stdout
  assert all(name in out.stderr for name in BAD_FILES)
  assert '21 images' in out.stderr  # dataset size: every file once, links notwithstanding
  _run_cli(tmp_path / 'run', flags[:1] + ['--config.num_train_steps=12'] + flags[2:])
  records = _metrics(tmp_path / 'run')
  assert [r['step'] for r in records] == [3, 6, 9, 12] and records[-1]['epoch'] > 4
  assert [r['skipped_images'] for r in records] == [3, 3, 3, 3]
  assert all(np.isfinite(r['loss']) for r in records)


def test_the_mae_demo_pretrains_with_a_falling_loss_and_pictures(tmp_path):
  """configs/mae_demo.py, shortened, through the README's command."""
  out = subprocess.run(
      [sys.executable, '-m', 'mixmae_jax.train', '--config=configs/mae_demo.py',
       f'--workdir={tmp_path}', '--config.num_train_steps=40', '--config.warmup_steps=5',
       '--config.log_every_steps=10', '--config.checkpoint_every_steps=40',
       '--config.reconstruction_every_steps=40', '--config.batch_size=16'],
      cwd=REPO, env=_env(2), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'mae on vit' in out.stderr
  losses = [r['loss'] for r in _metrics(tmp_path)]
  assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
  picture = Image.open(tmp_path / 'reconstructions' / 'step_0000040.png')
  assert picture.size[0] > 4 * 128  # original | masked | reconstruction | recon + visible
  _, meta = checkpointing.read_meta(checkpointing.checkpoint_dir(str(tmp_path)))
  assert meta['arch']['kind'] == 'pretraining' and meta['arch']['objective'] == 'mae'


def test_a_resumed_run_loads_its_programs_from_the_compilation_cache(tmp_path):
  cache = tmp_path / 'cache'
  flags = [f'--config.compilation_cache_dir={cache}', '--config.checkpoint_every_steps=2',
           '--config.num_train_steps=4', '--config.reconstruction_images=0']
  _run_cli(tmp_path / 'run', flags)
  first = sorted(p.name for p in cache.iterdir())
  assert first  # the step and the rest were cached ...
  shutil.rmtree(tmp_path / 'run' / 'checkpoints' / '4')
  out = _run_cli(tmp_path / 'run', flags)
  assert 'resumed from step 2' in out.stderr
  after = sorted(p.name for p in cache.iterdir())
  # ... and the resumed run hit them: it adds only the programs that check the restored arrays
  # (a fresh run has nothing to restore), never another train step.
  assert set(first) <= set(after)
  added = set(after) - set(first)
  assert all(name.startswith(('jit__finite', 'jit_stage', 'jit__device_fingerprints'))
             for name in added), added
  biggest = max(cache.iterdir(), key=lambda p: p.stat().st_size).name  # the train step
  assert biggest in first


def test_profile_steps_write_a_trace_and_the_log_says_how_long_data_took(tmp_path):
  train_loop.train_and_evaluate(_tiny_config(num_train_steps=4, log_every_steps=2,
                                             profile_steps=(2, 3), reconstruction_images=0),
                                str(tmp_path))
  traces = list((tmp_path / 'tensorboard' / 'plugins' / 'profile').rglob('*.xplane.pb'))
  assert len(traces) == 1
  records = _metrics(tmp_path)
  assert all(r['data_wait_seconds'] >= 0 and 0 <= r['data_wait_share'] <= 1 for r in records)


def test_a_local_compilation_cache_is_bounded_so_that_jax_locks_it(tmp_path, monkeypatch):
  """JAX reads and writes an unbounded cache without a lock (a process sharing it can load a
  half-written program); the run bounds a local cache unless the user chose a bound."""
  import jax  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import run_control  # pylint: disable=import-outside-toplevel
  before = (jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size)
  try:
    for user_bound, setting, want in ((-1, str(tmp_path / 'c'), run_control.CACHE_MAX_BYTES),
                                      (-1, 'gs://bucket/cache', -1), (123, str(tmp_path), 123)):
      jax.config.update('jax_compilation_cache_max_size', user_bound)
      monkeypatch.setattr(jax.config, 'update', _recording(jax.config.update, setting))
      assert run_control.use_compilation_cache(setting, str(tmp_path)) == setting
      monkeypatch.undo()
      assert jax.config.jax_compilation_cache_max_size == want, setting
  finally:
    jax.config.update('jax_compilation_cache_dir', before[0])
    jax.config.update('jax_compilation_cache_max_size', before[1])


def _recording(update, gcs_setting):
  """jax.config.update, except that a gs:// directory is not opened (no bucket here)."""
  def fake(name, value):
    if name == 'jax_compilation_cache_dir' and value == gcs_setting and '://' in value:
      return None
    return update(name, value)
  return fake


def test_a_cache_written_unbounded_gets_the_stamps_a_bounded_one_needs(tmp_path):
  """Entries from an unbounded cache have no last-use stamp; JAX's eviction then fails on them
  and caches nothing new. The run stamps them once before bounding the cache."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax._src.lru_cache as lru  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import run_control  # pylint: disable=import-outside-toplevel
  assert (run_control.ENTRY_SUFFIX, run_control.ACCESS_SUFFIX) == (lru._CACHE_SUFFIX,
                                                                   lru._ATIME_SUFFIX)
  (tmp_path / 'jit_step-abc-cache').write_bytes(b'x' * 10)
  (tmp_path / 'jit_other-def-cache').write_bytes(b'y' * 10)
  (tmp_path / 'jit_other-def-atime').write_bytes((5).to_bytes(8, 'little'))
  assert run_control.stamp_access_times(str(tmp_path)) == 1
  assert (tmp_path / 'jit_step-abc-atime').exists()
  assert (tmp_path / 'jit_other-def-atime').read_bytes() == (5).to_bytes(8, 'little')
  cache = lru.LRUCache(str(tmp_path), max_size=15)
  cache.put('jit_new-ghi', b'z' * 10)  # evicts the oldest instead of failing
  assert cache.get('jit_new-ghi') == b'z' * 10
  assert run_control.stamp_access_times(str(tmp_path / 'absent')) == 0
  del jax
