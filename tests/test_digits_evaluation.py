"""The whole chain learns on real labelled images: the fast digits comparison of the README.

Pretrain MixMAE on scikit-learn's handwritten digits, linear-probe the encoder, and compare with
the same encoder at random initialization. Runs the real module in a one-device process, as a
user would (`mixmae-digits-experiment --fast`); everything is seeded, so the run is
the same each time on a given machine.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip('sklearn')

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_pretrained_probe_beats_the_random_encoder(tmp_path):
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'  # the README's setting
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  out = subprocess.run([sys.executable, '-m', 'mixmae_jax.measurement.digits_experiment', '--fast',
                        f'--workdir={tmp_path}'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  pretrained = results['pretrained']['linear_probe_top1']
  random = results['random']['linear_probe_top1']
  assert random > 50.0  # both probes learn; the encoders differ
  assert pretrained > random, results
