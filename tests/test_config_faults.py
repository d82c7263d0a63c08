"""Config values that used to pass the checks and fail later (or never): NaN and infinite
floats, sizes that cannot fit, malformed tuples, zero counts. Each is refused before anything
compiles, naming the field, its value and the arithmetic or the fix."""
import json
import subprocess

import pytest
from conftest import cli_env, error_lines, tiny_pretraining_config, train_command

from mixmae_jax.evaluation import finetune_checks
from mixmae_jax.evaluation.finetune_config import finetune_config, shrink_task_for_local_run
from mixmae_jax.training import config_checks
from mixmae_jax.training.config_checks import ConfigError
from mixmae_jax.training.metric_logging import MetricLog

NAN, INF = float('nan'), float('inf')


def _refused(config, finetuning=False):
  check = finetune_checks.validate if finetuning else config_checks.validate
  with pytest.raises(ConfigError) as error:
    check(config, global_devices=8)
  return str(error.value)


@pytest.mark.parametrize('field,value', [
    ('grad_clip_norm', NAN), ('base_lr', NAN), ('weight_decay', NAN), ('min_lr', INF),
    ('adam_b2', NAN), ('model.objective.mask_ratio', NAN), ('model.encoder.drop_path_rate', INF),
    ('data.stall_seconds', NAN), ('lease_stale_seconds', INF)])
def test_every_float_field_must_be_finite(field, value):
  message = _refused(tiny_pretraining_config(**{field: value}))
  assert f'{field}={value} must be a finite number' in message


def test_a_nan_inside_a_tuple_field_is_named():
  config = tiny_pretraining_config()
  config.data.crop_scale = (0.2, NAN)
  assert 'data.crop_scale=(0.2, nan) must be a finite number' in _refused(config)


def test_nan_is_refused_in_fine_tuning_and_mixedae_configs_too():
  config = shrink_task_for_local_run(finetune_config('base'))
  config.layer_decay = NAN
  assert 'layer_decay=nan must be a finite number' in _refused(config, finetuning=True)
  from mixmae_jax.training.config_defaults import demo_config  # pylint: disable=import-outside-toplevel
  mixed = demo_config('mixedae', 'vit')
  mixed.model.objective.mask_ratio = NAN
  assert 'model.objective.mask_ratio=nan' in _refused(mixed)


@pytest.mark.parametrize('field,value,expected', [
    ('model.encoder.img_size', 65536, r'one image is 65536x65536x3 bytes = 12.0 GiB'),
    ('reconstruction_images', 100000, r'a picture 6400000 px tall.*at most 1023'),
    ('batch_size', 0, r'batch_size=0 must be at least 1'),
    ('data.num_parallel_calls', 0, r'use -1 \(tf.data chooses\) or a number of threads'),
    ('data.max_image_pixels', 0, r'data.max_image_pixels=0 must be at least 1'),
    ('lease_heartbeat_seconds', 90.0, r'under half the stale time'),
])
def test_values_that_cannot_work_are_refused_with_the_arithmetic(field, value, expected):
  import re  # pylint: disable=import-outside-toplevel
  message = _refused(tiny_pretraining_config(**{field: value}))
  assert re.search(expected, message), message
  assert 'multiple of 1' not in message


def test_a_crop_range_with_one_value_is_one_line_not_a_traceback(tmp_path):
  out = subprocess.run(train_command(tmp_path, ['--config.data.crop_scale=(0.5,)']),
                       env=cli_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert 'data.crop_scale=(0.5,) needs two values' in out.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_metrics_records_with_a_bad_step_or_bytes_are_set_aside(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(b'{"step": 1, "loss": 1.0}\n{"step": "two", "loss": 0.9}\n'
                   b'{"step": 3, "loss": 0.8, "note": "\xff\xfe"}\n{"step": 2.5}\n'
                   b'{"step": true}\n{"step": 4, "loss": 0.7}\n')
  log = MetricLog(str(tmp_path))
  log.truncate_after(10)
  assert [json.loads(line)['step'] for line in path.read_text().splitlines()] == [1, 4]
  dropped = (tmp_path / 'metrics.jsonl.dropped').read_bytes()
  assert dropped.count(b'\n') == 4 and b'\xff\xfe' in dropped  # nothing lost
  assert 'left out 4 line(s)' in caplog.text and 'line 2, 3, 4, 5' in caplog.text
  assert error_lines('') == []
