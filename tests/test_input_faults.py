"""Inputs that used to hang or kill a run: files that vanish mid-run, a FIFO among the images,
SIGTERM while the loop waits for data or during start-up, a decompression bomb.

Each fault is injected into a real run (a `train` process, or the input stream in-process) and
the test checks what the user sees (one `error:` line, exit code, status.json) and that nothing
was lost (every committed step restores, one metrics record per step).
"""
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, cli_env, error_lines, train_command, wait_for
from PIL import Image

import mixmae_jax
from mixmae_jax.data import image_decoding, image_folders, pretraining
from mixmae_jax.training import checkpointing
from mixmae_jax.training.config_defaults import data_fields
from mixmae_jax.training.input_watch import InputStalled, StopRequested, WatchedInput

DEMO = pretraining.DEMO_IMAGES


def _records(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _folder(tmp_path, count=32):
  folder = tmp_path / 'images'
  folder.mkdir()
  for name in sorted(os.listdir(DEMO))[:count]:
    shutil.copy(os.path.join(DEMO, name), folder / name)
  return folder


def _long_run(workdir, folder, *extra):
  flags = ['--config.num_train_steps=100000', '--config.log_every_steps=1',
           '--config.checkpoint_every_steps=3', '--config.reconstruction_images=0',
           f'--config.data.image_folder={folder}', *extra]
  return subprocess.Popen(train_command(workdir, flags), env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _committed(workdir):
  return checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)),
                                    create=False).steps()


def test_files_moved_away_mid_run_stop_it_with_an_error_naming_the_folder(tmp_path):
  folder = _folder(tmp_path)
  workdir = tmp_path / 'run'
  process = _long_run(workdir, folder)
  try:
    wait_for(lambda: (workdir / 'checkpoints' / '3').is_dir(), process)
    aside = tmp_path / 'aside'
    shutil.move(str(folder), aside)
    folder.mkdir()  # the folder is there, its files are not
    moved_at = time.monotonic()
    _, stderr = process.communicate(timeout=180)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 1
  assert time.monotonic() - moved_at < 120  # the probe, not data.stall_seconds (900 s)
  errors = error_lines(stderr)
  assert len(errors) == 1 and str(folder) in errors[0] and 'can be read now' in errors[0], stderr
  status = json.loads((workdir / 'status.json').read_text())
  assert status['state'] == 'failed' and status['step'] in _committed(workdir)
  # Put the files back: the same command resumes from the last committed step.
  shutil.rmtree(folder)
  shutil.move(str(aside), folder)
  last = _committed(workdir)[-1]
  done = subprocess.run(train_command(workdir, [
      f'--config.num_train_steps={last + 3}', '--config.log_every_steps=1',
      '--config.checkpoint_every_steps=3', '--config.reconstruction_images=0',
      f'--config.data.image_folder={folder}']), env=cli_env(), capture_output=True, text=True,
      timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert [r['step'] for r in _records(workdir)] == list(range(1, last + 4))


def test_sigterm_while_waiting_for_input_saves_and_exits_as_preempted(tmp_path):
  folder = _folder(tmp_path)
  workdir = tmp_path / 'run'
  process = _long_run(workdir, folder, '--config.data.stall_seconds=600')
  try:
    wait_for(lambda: (workdir / 'checkpoints' / '3').is_dir(), process)
    shutil.move(str(folder), tmp_path / 'aside')
    folder.mkdir()
    time.sleep(4)  # the loop is waiting on an input that gives nothing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 75, stderr[-3000:]
  status = json.loads((workdir / 'status.json').read_text())
  assert status['state'] == 'preempted' and status['step'] == _committed(workdir)[-1]
  assert status['step'] == max(r['step'] for r in _records(workdir))  # the last trained step
  mixmae_jax.load(str(workdir))


def test_sigterm_during_start_up_exits_as_preempted(tmp_path):
  """Start-up work that takes long (a TFDS preparation, a slow listing) is stood in for by a
  sleep in the data-size count; SIGTERM arrives while it runs."""
  workdir = tmp_path / 'run'
  script = ('import sys, time\n'
            'from mixmae_jax.data import pretraining\n'
            'size = pretraining.dataset_size\n'
            'pretraining.dataset_size = lambda c: (time.sleep(60), size(c))[1]\n'
            'from mixmae_jax.training import entry_point, pretraining as run\n'
            'sys.argv = sys.argv[:1] + sys.argv[2:]\n'
            'entry_point.run_cli(run.train_and_evaluate, "workdir")\n')
  command = [sys.executable, '-c', script] + train_command(workdir)[2:]
  process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: (workdir / 'lease.json').exists(), process, timeout=120)
    time.sleep(1)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 75, stderr[-3000:]
  assert time.monotonic() - started < 30
  status = json.loads((workdir / 'status.json').read_text())
  assert (status['state'], status['exit_code']) == ('preempted', 75)
  assert not (workdir / 'lease.json').exists()


def test_a_fifo_named_like_an_image_is_left_out_of_the_listing(tmp_path, caplog):
  folder = _folder(tmp_path, count=3)
  os.mkfifo(folder / 'pipe.jpg')
  os.symlink(tmp_path / 'nowhere.jpg', folder / 'broken.jpg')
  listed = {}
  worker = threading.Thread(
      target=lambda: listed.update(files=image_folders.list_images(str(folder))), daemon=True)
  worker.start()
  worker.join(30)
  assert not worker.is_alive(), 'listing the folder hung'
  assert [os.path.basename(f) for f in listed['files']] == sorted(os.listdir(DEMO))[:3]
  assert 'left out 2 name(s) that are not regular files' in caplog.text
  image_folders.require_decodable(listed['files'], 'the folder')  # reads no FIFO, returns


def _never(release: threading.Event):
  """A source whose first read blocks until `release` is set (then it ends)."""
  return iter(lambda: release.wait(), True)


def test_the_watched_input_stops_on_request_and_on_a_stall():
  stop, release = threading.Event(), threading.Event()
  with WatchedInput(_never(release), 'a source', stall_seconds=600,
                    stop_requested=stop.is_set) as never:
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(StopRequested):
      next(never)
  with WatchedInput(_never(release), "data.image_folder='/x'", stall_seconds=0.6) as stalled:
    with pytest.raises(InputStalled, match=r"data.image_folder='/x' for 1 s"):
      next(stalled)
  with WatchedInput(_never(release), 'a source', stall_seconds=600,
                    problem=lambda: 'the files are gone', probe_seconds=0.3) as gone:
    with pytest.raises(InputStalled, match='the files are gone'):
      next(gone)
  release.set()
  failing = WatchedInput(iter([1, 2]), 'a source', stall_seconds=5)
  assert list(failing) == [1, 2]


def test_closing_the_watched_input_ends_its_reader_and_closes_the_source():
  """A run that ends before its input must not leave a thread holding the pipeline: before
  this, every finished run left its reader blocked on a full queue, with its tf.data pipeline."""
  closed = threading.Event()

  def endless():
    try:
      yield from iter(int, 1)
    finally:
      closed.set()
  watched = WatchedInput(endless(), 'a source', stall_seconds=5)
  assert next(watched) == 0
  time.sleep(0.1)  # the reader has the next item and waits on the full queue
  watched.close()
  assert closed.is_set() and not watched._thread.is_alive()  # pylint: disable=protected-access
  release = threading.Event()
  stuck = WatchedInput(_never(release), 'a source', stall_seconds=5)
  stuck.close(timeout=0.2)  # inside a read: the close returns, the thread ends with the read
  release.set()
  stuck._thread.join(5)  # pylint: disable=protected-access
  assert not stuck._thread.is_alive()  # pylint: disable=protected-access


def _bomb_png(side: int) -> bytes:
  """A valid greyscale PNG of side x side zeros, compressed to about a thousandth."""
  def chunk(kind, data):
    body = kind + data
    return len(data).to_bytes(4, 'big') + body + zlib.crc32(body).to_bytes(4, 'big')
  compressor = zlib.compressobj(9)
  row = b'\0' * (side + 1)
  data = b''.join(compressor.compress(row) for _ in range(side)) + compressor.flush()
  header = side.to_bytes(4, 'big') * 2 + bytes([8, 0, 0, 0, 0])
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', data) +
          chunk(b'IEND', b''))


def test_a_decompression_bomb_is_skipped_and_counted_before_decoding(tmp_path):
  folder = _folder(tmp_path, count=15)
  bomb = _bomb_png(20000)
  assert len(bomb) < 2_000_000
  (folder / 'bomb.png').write_bytes(bomb)
  assert int(image_decoding.declared_pixels(tf.constant(bomb))) == 20000 * 20000
  config = data_fields()
  config.image_folder = str(folder)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  stream = pretraining.PretrainingInput(config, image_size=32, per_host_batch=8, seed=0)
  for _ in range(4):  # two epochs of 16 files
    batch = next(stream)
    assert batch['image'].shape == (8, 32, 32, 3)
  grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
  assert grown_mib < 600, grown_mib  # decoding it would take 1.2 GB (0.4 GB grey)
  assert stream.skipped == 1 and stream.skipped_names == [str(folder / 'bomb.png')]


@pytest.mark.parametrize('fmt,options', [('JPEG', {}), ('PNG', {}), ('GIF', {}), ('BMP', {}),
                                         ('WEBP', {'lossless': True}),
                                         ('WEBP', {'lossless': False})])
def test_declared_pixels_reads_every_format_from_its_header(fmt, options):
  out = io.BytesIO()
  Image.fromarray(np.zeros((37, 53, 3), np.uint8)).save(out, fmt, **options)
  assert int(image_decoding.declared_pixels(tf.constant(out.getvalue()))) == 37 * 53
  assert int(image_decoding.declared_pixels(tf.constant(b'abc'))) == 0
