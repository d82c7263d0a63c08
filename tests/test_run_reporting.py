"""What a run reports: the metrics log (torn lines, remote stores), the ETA, progress of long
jobs, what a non-finite stop names, and which config mistakes are caught with their arithmetic."""
import json
import logging
import os
import threading

import numpy as np
import pytest

from mixmae_jax.networks import swin
from mixmae_jax.objectives.mixmae import MixMAEConfig
from mixmae_jax.training import metric_logging, step_metrics
from mixmae_jax.training.metric_logging import MetricLog, Progress, WorkProgress


def test_a_torn_last_line_is_dropped_with_a_warning_naming_the_file(tmp_path, caplog):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n'
                                          '{"step": 3, "lo')
  caplog.set_level(logging.WARNING)
  log = MetricLog(str(tmp_path))
  log.truncate_after(2)
  log.write(3, {'loss': 0.8})
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  steps = [json.loads(line)['step'] for line in lines]
  assert steps == [1, 2, 3]
  assert f'{tmp_path}/metrics.jsonl: left out 1 line(s)' in caplog.text and '(line 3' in caplog.text


def test_a_remote_log_is_written_at_flushes_not_at_every_record(tmp_path, monkeypatch):
  log = MetricLog(str(tmp_path), remote=True)
  writes = []
  original = type(log.path).write_text
  monkeypatch.setattr(type(log.path), 'write_text',
                      lambda self, text: (writes.append(len(text)), original(self, text))[1])
  for step in range(1, 101):
    log.write(step, {'loss': 1.0 / step})
  assert not writes  # 100 records, no write yet
  log.flush()
  log.flush()  # nothing new: nothing written
  assert len(writes) == 1
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 100
  monkeypatch.setattr(metric_logging, 'REMOTE_FLUSH_SECONDS', 0.0)
  log.write(101, {'loss': 0.01})  # past the interval: written at once
  assert len(writes) == 2


def test_the_eta_is_smoothed_over_one_slow_interval():
  progress = Progress(total_steps=10_000, start_step=0, now=0.0)
  now = 0.0
  for step in range(50, 1001, 50):  # 0.1 s per step
    now += 5.0
    progress.steps_per_second(step, now)
  steady = progress.eta_seconds(1000)
  now += 50.0  # one interval ten times slower (an evaluation, a checkpoint)
  progress.steps_per_second(1050, now)
  assert steady == pytest.approx(900, rel=0.01)
  assert progress.eta_seconds(1050) < 1.5 * steady  # the last interval's rate says 9,000 s


def test_long_jobs_report_their_progress(caplog):
  clock = iter(float(t) for t in range(0, 1000, 10))
  caplog.set_level(logging.INFO)
  work = WorkProgress('k-NN features of the train images', 400, 'images', every_seconds=15,
                      clock=lambda: next(clock))
  assert list(work.over(range(4), lambda _: 100)) == [0, 1, 2, 3]
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == 'k-NN features of the train images: starting (400 images)'
  assert any('200/400 images (50%)' in line and 'ETA' in line for line in lines)
  assert '400/400 images (100%)' in lines[-1] and 'done in' in lines[-1]


@pytest.mark.parametrize('values,named', [
    (dict(loss=np.nan, grad_norm=np.nan, param_norm=3.0), 'non-finite loss and gradient norm'),
    (dict(loss=0.5, grad_norm=np.inf, param_norm=3.0), 'non-finite gradient norm at step 7'),
    (dict(loss=0.5, grad_norm=1.0, param_norm=np.inf), 'non-finite parameter norm at step 7'),
])
def test_a_non_finite_stop_names_what_was_non_finite(values, named):
  metrics = step_metrics.StepMetrics(5)
  replicated = {k: np.asarray([v]) for k, v in dict(values, lr=1e-3, nonfinite=True).items()}
  metrics.add(6, {k: np.asarray([0.0]) if k != 'nonfinite' else np.asarray([False])
                  for k in replicated})
  metrics.add(7, replicated)
  with pytest.raises(step_metrics.NonFiniteLoss) as error:
    metrics.sync()
  assert named in str(error.value) and 'steps 6-7' in str(error.value)
  if np.isfinite(values['loss']):
    assert 'non-finite loss' not in str(error.value)


def test_a_mask_ratio_mixing_no_unit_is_refused_with_the_arithmetic():
  demo = swin.config('tiny', **swin.DEMO)  # 128 px: a 4x4 mixing grid
  problems = MixMAEConfig(encoder=demo, mask_ratio=0.01).problems()
  assert problems == ['objective.mask_ratio=0.01 mixes int(16 units x 0.01) = int(0.16) = 0 '
                      'units of the 4x4 mixing grid (encoder.img_size 128 / stride 32): nothing '
                      'would be mixed. Use mask_ratio >= 0.0625 (1 unit of 16).']
  assert not MixMAEConfig(encoder=demo, mask_ratio=0.0625).problems()
  base = swin.config('base')  # 7x7 grid: 1/49 rounds below 1 unit in floating point
  assert not MixMAEConfig(encoder=base, mask_ratio=0.0205).problems()


def _listing(folder, result):
  from mixmae_jax.data import image_folders  # pylint: disable=import-outside-toplevel
  result.append(image_folders.list_images(str(folder)))


def test_links_in_an_image_folder_list_every_file_once_and_end(tmp_path):
  pytest.importorskip('tensorflow')
  for name in ('a/x.jpg', 'a/b/y.png', 'z.JPEG'):
    os.makedirs(os.path.dirname(tmp_path / 'root' / name), exist_ok=True)
    (tmp_path / 'root' / name).write_bytes(b'')
  (tmp_path / 'root' / 'a' / 'b' / 'up').symlink_to('../..')  # a loop
  (tmp_path / 'root' / 'a' / 'back').symlink_to('..')  # a second loop
  (tmp_path / 'root' / 'same').symlink_to('a')  # the same folder twice
  (tmp_path / 'root' / 'w.jpg').symlink_to(tmp_path / 'root' / 'z.JPEG')  # the same file twice
  result = []
  worker = threading.Thread(target=_listing, args=(tmp_path / 'root', result), daemon=True)
  worker.start()
  worker.join(timeout=60)
  assert result, 'listing did not end'
  names = [os.path.relpath(p, tmp_path / 'root') for p in result[0]]
  assert names == ['a/b/y.png', 'a/x.jpg', 'w.jpg']  # the first path of each, in sorted order


def test_the_composite_column_shows_own_units_from_the_input_and_the_rest_predicted():
  from mixmae_jax.objectives import mixmae  # pylint: disable=import-outside-toplevel
  encoder = swin.config('base', img_size=64, embed_dim=8, depths=(1, 1, 1, 1),
                        num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2))
  arch = MixMAEConfig(encoder=encoder, norm_pix_loss=False)
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  mask = np.array([[0, 1], [1, 0]])
  out = {'mask': mask, 'pred': np.zeros((2, 4, 32 * 32 * 3), np.float32)}  # predicts zeros
  _, columns = mixmae.picture_columns(images, out, arch)
  assert [title for title, _ in columns] == ['original', 'mixed input', 'reconstruction',
                                             'recon + visible']
  composite = columns[3][1]
  np.testing.assert_array_equal(composite[:, :32, :32], images[:, :32, :32])  # own unit
  np.testing.assert_array_equal(composite[:, :32, 32:], 0.0)  # the partner's: predicted
