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


def test_default_folder_is_shared_samples_or_demo():
  folder = pipeline_benchmark.default_folder()
  assert folder == '' or os.path.isdir(folder)
