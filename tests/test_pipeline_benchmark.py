"""The input-pipeline benchmark CLI runs and ends with a well-formed JSON line."""
import json
import os
import subprocess
import sys

from mixmae_jax.measurement import pipeline_benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, 'mixmae_jax', 'data', 'demo_images')


def test_benchmark_cli_prints_json_last():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run(
      [sys.executable, '-m', 'mixmae_jax.measurement.pipeline_benchmark', '--image_folder', DEMO,
       '--image_size', '32', '--batch_size', '4', '--num_batches', '3', '--warmup_batches', '1',
       '--threads', '1'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ('images_per_sec', 'images_per_sec_per_core', 'mean_source_pixels'):
    assert figures[key] > 0, key
  assert figures['cores'] == 1 and figures['batch_size'] == 4
  assert figures['image_size'] == 32 and figures['num_batches'] == 3
  assert figures['source'] == DEMO and figures['source_images'] == 64


def test_without_a_config_or_folder_it_reads_the_demo_images():
  data, size = pipeline_benchmark.pipeline_settings(
      pipeline_benchmark.parse_flags(['pipeline_benchmark']))
  assert data.image_folder == '' and size == 224  # '': the images shipped with the package


def test_flags_take_a_config_and_its_field_overrides():
  args = pipeline_benchmark.parse_flags([
      'pipeline_benchmark', '--config=' + os.path.join(REPO, 'configs', 'demo.py'),
      '--config.data.crop_scale=(0.5, 1.0)', '--no_fused_decode', '--threads', '1'])
  data, size = pipeline_benchmark.pipeline_settings(args)
  assert size == 128 and tuple(data.crop_scale) == (0.5, 1.0)
  assert data.image_folder == '' and not data.fused_jpeg_decode  # the demo config's own source
  assert args.threads == 1
  args = pipeline_benchmark.parse_flags(['pipeline_benchmark', '--image_folder', DEMO])
  assert pipeline_benchmark.pipeline_settings(args)[0].image_folder == DEMO


def test_compare_times_every_decode_variant_against_todays(capsys):
  pipeline_benchmark.main(['--image_folder', DEMO, '--image_size', '32', '--batch_size', '4',
                           '--num_batches', '1', '--warmup_batches', '0', '--threads', '1',
                           '--compare', '--rounds', '1'])
  figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  variants = figures['variants']
  assert list(variants) == ['today', 'dct_scaled', 'bilinear', 'dct_scaled+bilinear']
  assert variants['today']['ratio'] == 1 and variants['today']['max_abs_diff'] == 0
  assert all(v['images_per_cpu_second'] > 0 for v in variants.values())
  # the same crops, decoded or resized otherwise: close, not equal
  assert 0 < variants['bilinear']['mean_abs_diff'] < 20
  assert 0 < variants['dct_scaled']['mean_abs_diff'] < 20
