"""The train-step benchmark CLI, its FLOP counts, peak table and batch search."""
import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

from mixmae_jax.measurement import (benchmark, device_memory, machine, profile_summary,
                                    topk_attention_benchmark, tpu_targets)
from mixmae_jax.networks import swin, vit
from mixmae_jax.objectives import mae, mixmae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_cli_runs_without_tensorflow_and_prints_json_last(tmp_path):
  """MixMAE and MAE side by side in one run, as the README's comparison is made."""
  # A `tensorflow` package that cannot be imported: the benchmark must never need it.
  (tmp_path / 'tensorflow').mkdir()
  (tmp_path / 'tensorflow' / '__init__.py').write_text(
      'raise ImportError("the benchmark must not import TensorFlow")\n')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path), REPO, os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run(
      [sys.executable, '-m', 'mixmae_jax.measurement.benchmark',
       '--config=configs/mixmae_swin_base_w14_600ep.py:runlocal',
       '--compare_config=configs/mae_vit_base_800ep.py:runlocal', '--batch_size', '2',
       '--steps', '2', '--warmup_steps', '1', '--peak_tflops', '1', '--config.model.remat=block'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  runs = json.loads(result.stdout.strip().splitlines()[-1])['runs']
  assert [(f['objective'], f['encoder']) for f in runs] == [('mixmae', 'swin'), ('mae', 'vit')]
  assert '| mae / vit |' in result.stdout  # the side-by-side table
  for figures in runs:
    for key in ('compile_seconds', 'median_step_seconds', 'pipelined_step_seconds',
                'images_per_sec', 'images_per_sec_per_device', 'analytic_flops_per_image',
                'xla_flops_per_image', 'model_tflops_per_sec_per_device', 'mfu', 'mfu_xla'):
      assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures['per_device_batch'] == 2 and figures['devices'] == 8  # conftest's devices
    assert figures['global_batch'] == 16 and figures['image_size'] == 64
    assert figures['images_per_sec'] == pytest.approx(8 * figures['images_per_sec_per_device'])
    assert figures['remat'] == 'block'
    assert figures['peak_memory_bytes'] is None  # CPUs keep no memory statistics ...
    assert figures['compiled_memory_bytes']['temp'] > 0  # ... but XLA's plan is there
    # Both counts are of the same model: XLA adds norms, softmax, the optimizer and so on.
    assert 1.0 < figures['xla_flops_per_image'] / figures['analytic_flops_per_image'] < 1.5


def test_single_config_prints_its_figures_as_the_json_object(tmp_path):
  figures = benchmark.main(['--config=' + os.path.join(REPO, 'configs', 'mae_demo.py'),
                            '--batch_size', '1', '--steps', '1', '--warmup_steps', '0',
                            '--skip_xla_flops', '--config.model.encoder.depth=1'])
  assert figures['objective'] == 'mae' and figures['xla_flops_per_image'] is None
  assert figures['cpu']['model'] and 'vector_extensions' in figures['cpu']  # named beside it


def test_mixedae_runs_next_to_mae_in_one_run():
  figures = benchmark.main(['--config=' + os.path.join(REPO, 'configs', 'mae_vit_base_800ep.py')
                            + ':runlocal',
                            '--compare_config=' + os.path.join(REPO, 'configs',
                                                                'mixedae_vit_base_800ep.py')
                            + ':runlocal', '--batch_size', '4', '--steps', '1',
                            '--warmup_steps', '0', '--skip_xla_flops'])
  runs = figures['runs']
  assert [f['objective'] for f in runs] == ['mae', 'mixedae']
  assert runs[1]['analytic_flops_per_image'] > runs[0]['analytic_flops_per_image']
  assert all(f['images_per_sec'] > 0 and np.isfinite(f['loss']) for f in runs)


def test_topk_attention_benchmark_prints_every_method():
  seconds = topk_attention_benchmark.main(['--batch', '1', '--tokens', '8', '--heads', '2',
                                           '--head_dim', '4', '--keys', '3', '--repeats', '1'])
  assert set(seconds) == {'dense', 'threshold', 'threshold_by_lax_top_k', 'top_k'}
  assert all(s > 0 for s in seconds.values())


def test_analytic_flops_match_the_published_swin_counts():
  """Swin-T and Swin-B (224, windows 7): 4.5 and 15.4 GFLOPs as the Swin paper counts them
  (multiply-adds), i.e. 9.0 and 30.9 G here where a multiply-add is 2 FLOPs."""
  for size, published_gmacs in (('tiny', 4.5), ('base', 15.4)):
    enc = swin.config(size, window_sizes=(7, 7, 7, 7), shifted_windows=True)
    assert sum(swin.forward_flops(enc).values()) / 2e9 == pytest.approx(published_gmacs, abs=0.05)


def test_analytic_flops_match_the_published_vit_count():
  """ViT-B/16 at 224 on all 197 tokens: 17.6 GMACs (DeiT, timm)."""
  assert sum(vit.forward_flops(vit.config('base')).values()) / 2e9 == pytest.approx(17.6, abs=0.05)


def test_mae_encodes_a_quarter_and_decodes_every_patch():
  arch = mae.MAEConfig()
  flops = mae.flops_per_image(arch)
  assert flops['train'] == pytest.approx(3 * (flops['encoder_forward'] + flops['decoder_forward']))
  full = sum(vit.forward_flops(arch.encoder).values())
  # 50 of 197 tokens through the encoder (attention is quadratic, so a little under a quarter)
  assert 0.24 < flops['encoder_forward'] / full < 0.26
  assert 10e9 < flops['decoder_forward'] < 11.5e9  # 8 blocks of 512 on 197 tokens, pred head


def test_mixmae_train_flops_are_three_forward_passes_of_encoder_and_both_branches():
  flops = mixmae.flops_per_image(mixmae.MixMAEConfig(encoder=swin.config('base')))
  assert flops['train'] == pytest.approx(3 * (flops['encoder_forward'] + flops['decoder_forward']))
  # windows of 14 cost more than Swin-B's 7; both decoder branches are ~2 x 8 blocks of 49 tokens
  assert 32e9 < flops['encoder_forward'] < 33e9 and 5e9 < flops['decoder_forward'] < 6e9


@pytest.mark.parametrize('kind,expected', [
    ('NVIDIA H100 80GB HBM3', 989.0), ('NVIDIA H100 PCIe', 756.0), ('NVIDIA H200', 989.0),
    ('NVIDIA A100-SXM4-40GB', 312.0), ('TPU v4', 275.0), ('TPU v5 lite', 197.0),
    ('TPU v5', 459.0), ('TPU v5p', 459.0), ('TPU v6 lite', 918.0), ('cpu', None)])
def test_peak_table(kind, expected):
  assert machine.peak_tflops(kind) == expected


@pytest.mark.parametrize('true_max', [0, 2, 6, 8, 30, 100, 128, 1000, 5000])
@pytest.mark.parametrize('start,granule', [(2, 2), (32, 8), (4096, 8)])
def test_largest_batch_search(true_max, start, granule):
  tried = []

  def fits(batch):
    tried.append(batch)
    return batch <= true_max

  found = device_memory.largest_batch(fits, start, limit=1024, granule=granule)
  assert found == min(true_max, 1024) // granule * granule
  assert all(b % granule == 0 for b in tried) and len(tried) <= 2 * 11


def test_flags_are_the_trainers_config_flags_and_apply_to_every_config(capsys):
  fv = benchmark.parse_flags([
      'benchmark', '--config=' + os.path.join(REPO, 'configs', 'mixmae_swin_base_w14_600ep.py')
      + ':runlocal', '--compare_config=' + os.path.join(REPO, 'configs', 'mae_demo.py'),
      '--config.model.scan_blocks=false', '--config.model.remat=dots', '--config.base_lr=1e-3',
      '--steps', '3'])
  (_, first), (spec, second) = benchmark.configs_to_run(fv)
  assert first.model.encoder.img_size == 64 and spec.endswith('mae_demo.py')
  for config in (first, second):
    assert config.model.scan_blocks is False and config.model.remat == 'dots'
    assert config.base_lr == 1e-3
  assert fv.steps == 3
  capsys.readouterr()
  with pytest.raises(SystemExit, match='^1$'):
    benchmark.parse_flags(['benchmark', '--config=demo', '--config.model.nonexistent=1'])
  assert re.fullmatch(r"error: --config.model.nonexistent: .*has no field 'model.nonexistent'.*\n",
                      capsys.readouterr().err)
  with pytest.raises(SystemExit, match='^1$'):
    benchmark.configs_to_run(benchmark.parse_flags([
        'benchmark', '--config=demo', '--compare_config=mae_demo',
        '--config.model.encoder.window_sizes=(2, 2, 2, 2)']))
  assert re.fullmatch(r"error: --config.model.encoder.window_sizes does not apply to "
                      r"--compare_config=.*mae_demo.py: .*\n", capsys.readouterr().err)


def test_a_traced_step_is_summarised_by_kernel_kind(tmp_path, capsys):
  benchmark.main(['--config=' + os.path.join(REPO, 'configs', 'mae_demo.py'),
                  '--batch_size', '1', '--steps', '1', '--warmup_steps', '0', '--skip_xla_flops',
                  '--config.model.encoder.depth=1', f'--profile_dir={tmp_path}'])
  capsys.readouterr()
  result = profile_summary.main([str(tmp_path), '--top', '5'])
  kinds = result['kinds']
  assert 0 < len(kinds) <= 5 and result['kernel_seconds'] > 0
  assert kinds == sorted(kinds, key=lambda k: -k['seconds'])
  assert not any(k['kind'].startswith(('ThunkExecutor', '$')) for k in kinds)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['kinds'] == kinds
  with pytest.raises(SystemExit, match='no .*trace'):
    profile_summary.main([str(tmp_path / 'empty')])


def test_the_gpu_check_runs_its_sequence_at_toy_size(capsys):
  """Every row of the GPU check, small, on this CPU: one JSON line per figure on stdout, the
  benchmark's own report kept off it; the official side says why it is skipped."""
  from mixmae_jax.measurement import gpu_check  # pylint: disable=import-outside-toplevel
  assert gpu_check.main(['--toy', '--steps=1', '--official_repo=/nonexistent']) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  ours = [r for r in lines if r['check'] == 'ours']
  assert {(r['method'], r['remat']) for r in ours} == {
      (m, r) for m in ('mixmae', 'mae') for r in ('none', 'block')}
  assert {r['figure'] for r in ours} >= {'compile_seconds', 'images_per_sec'}
  assert all(r['device'] == 'cpu' and r['value'] > 0 for r in ours)
  skipped = [r for r in lines if r['check'] == 'official']
  assert len(skipped) == 1 and skipped[0]['skipped'] in ('torch is not installed',
                                                          'no CUDA device for torch')
  assert lines[-1]['check'] == 'done'


def test_the_cpu_is_described_by_model_and_vector_extensions(tmp_path):
  from mixmae_jax.measurement import machine  # pylint: disable=import-outside-toplevel
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse avx2 fma '
                     'avx512f avx512bw avx512_bf16\n\nprocessor\t: 1\n'
                     'model name\t: AMD EPYC 9B14\n')
  cpu = machine.cpu_description(str(cpuinfo))
  assert cpu['model'] == 'AMD EPYC 9B14'
  assert cpu['vector_extensions'] == ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_bf16']
  assert cpu['cores'] >= 1
  assert machine.describe_line(cpu).startswith('CPU: AMD EPYC 9B14 (')
  here = machine.cpu_description()  # this machine's, whatever it is
  assert here['model'] and isinstance(here['vector_extensions'], list)


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads /proc')
def test_host_memory_follows_what_this_process_holds():
  from mixmae_jax.measurement import machine  # pylint: disable=import-outside-toplevel
  before = machine.host_memory()
  held = bytearray(64 << 20)
  held[::4096] = b'x' * len(held[::4096])  # touch every page, so it is resident
  after = machine.host_memory()
  assert after['resident'] - before['resident'] > 48 << 20
  assert after['peak'] >= after['resident'] > 0
  assert machine.physical_memory_bytes() > after['peak']
  del held


@pytest.mark.skipif(not os.path.exists('/proc/self/status') or platform.libc_ver()[0] != 'glibc',
                    reason='reads /proc; trims glibc\'s heap')
def test_trimming_hands_back_pages_freed_inside_the_heap():
  from mixmae_jax.measurement import machine  # pylint: disable=import-outside-toplevel
  # 2 KB objects come from malloc's heap; keeping every 50th pins its top, so freeing the rest
  # leaves ~190 MiB of free pages that glibc keeps until asked (what a compile leaves behind)
  objects = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]
  pinned = objects[::50]
  del objects
  kept = machine.host_memory()['resident']
  machine.trim_host_memory()
  assert kept - machine.host_memory()['resident'] > 100 << 20
  del pinned


@pytest.mark.parametrize('fixed,per_image,refused_over', [
    (1_000, 37, None), (0, 100, None), (5_000, 1, None), (1_000, 37, 96), (1_000, 37, 40),
    (20_000, 10, None)])
@pytest.mark.parametrize('first', [8, 128])
def test_tpu_largest_batch_predicts_then_verifies(fixed, per_image, refused_over, first):
  """The TPU search (plans, not runs): its answer fits, the next multiple does not, it needs
  few compiles, and the caller's first plan is not compiled again."""
  hbm, granule, limit, compiled = 10_000, 8, 1024, []

  def plan_at(batch):
    compiled.append(batch)
    if refused_over is not None and batch > refused_over:
      return None  # the compiler refused it outright
    return fixed + per_image * batch

  known = {first: plan_at(first)}
  compiled.clear()
  found, tried = tpu_targets.largest_batch(plan_at, hbm, first, limit, granule, known=known)
  fitting = [b for b in range(granule, limit + 1, granule)
             if (refused_over is None or b <= refused_over) and fixed + per_image * b <= hbm]
  assert found == (max(fitting) if fitting else 0)
  assert first not in compiled and set(compiled) <= set(tried)
  # halving to a batch that fits, then a line that holds costs its crossing and the neighbour;
  # a refusal below the line adds a bisection
  halvings = (first // granule).bit_length() - 1
  assert len(compiled) <= halvings + (3 if refused_over is None else 12), compiled


@pytest.mark.parametrize('first', [8, 64, 512])
def test_tpu_largest_batch_is_right_when_memory_is_not_linear(first):
  def plan_at(batch):
    return 500 + 20 * batch + batch * batch // 4  # the line underestimates as it goes

  found, _ = tpu_targets.largest_batch(plan_at, 10_000, first, 1024, 8)
  assert plan_at(found) <= 10_000 < plan_at(found + 8)


# total bytes per chip that Swin-B scanned with remat planned on v5e (jax 0.10.2), by batch
SWIN_B_V5E_PLANS = {128: 9_418_045_440, 232: 15_586_483_712, 256: 16_977_664_000,
                    264: 16_938_812_928, 272: 17_339_940_864}


def test_tpu_largest_batch_on_a_real_sweeps_plans():
  """Swin-B scanned with remat on v5e (jax 0.10.2): plans are not quite linear near 16 GiB;
  the search must not spend compiles far above a boundary it has nearly found."""
  plans, compiled = SWIN_B_V5E_PLANS, []

  def plan_at(batch):
    compiled.append(batch)
    return plans[batch]

  found, _ = tpu_targets.largest_batch(plan_at, 16 * 2**30, 128, 1024, 8,
                                       known={128: plans[128]})
  assert (found, compiled) == (264, [232, 256, 264, 272])


def test_tpu_largest_batch_with_another_chips_slope_compiles_the_answer_and_its_neighbour():
  """With the memory per image measured on another chip, a line that holds costs two compiles:
  the answer and the batch above it (the real Swin-B scanned plans, slope from 128 to 264)."""
  plans, compiled = SWIN_B_V5E_PLANS, []

  def plan_at(batch):
    compiled.append(batch)
    return plans[batch]

  slope = (16 * 2**30 - plans[128]) / (264 - 128)  # as the sweep takes it from another chip
  found, _ = tpu_targets.largest_batch(plan_at, 16 * 2**30, 128, 1024, 8,
                                       known={128: plans[128]}, bytes_per_image=slope)
  assert (found, compiled) == (264, [264, 272])

  def refused_above_272(batch):  # plans between on the line, the compiler refusing above 272
    return None if batch > 272 else plans.get(batch, plans[128] + (batch - 128) * slope)

  for wrong in (slope / 3, slope * 3):  # a slope far off still ends at the right answer
    found, _ = tpu_targets.largest_batch(refused_above_272, 16 * 2**30, 128, 1024, 8,
                                         known={128: plans[128]}, bytes_per_image=wrong)
    assert found == 264


@pytest.mark.parametrize('gives_up_over,compiles', [(888, [888, 896]), (880, [888, 880]),
                                                    (1024, [888, 896, 1024])])
def test_tpu_largest_batch_with_a_slope_where_the_compiler_squeezes(gives_up_over, compiles):
  """MAE ViT-B on v5e: plans flatten near HBM (the compiler rematerializes) until it gives up
  at 888; the slope from the first plan to HBM there settles a chip alike in two compiles, and
  one that fits more is found where the flat plans' line says (it does not grow: the limit)."""
  hbm, compiled = 16 * 2**30, []

  def plan_at(batch):
    compiled.append(batch)
    return None if batch > gives_up_over else int(min(8.5 + 0.05 * (batch - 128), 14.5) * 2**30)

  slope = (hbm - 8.5 * 2**30) / (888 - 128)
  found, _ = tpu_targets.largest_batch(plan_at, hbm, 128, 1024, 8,
                                       known={128: int(8.5 * 2**30)}, bytes_per_image=slope)
  assert (found, compiled) == (gives_up_over, compiles)
