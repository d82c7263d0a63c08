"""Time our MixMAE training step against the official PyTorch one on this CPU, side by side.

  python examples/official_step_timing.py --official_repo /path/to/MixMIM \
      [--batch 8] [--steps 4] [--rounds 2] [--threads 2] [--compare_repo OTHER_CHECKOUT] \
      [--xla_variant NAME=XLA_FLAGS ...] [--config.FIELD=VALUE ...]

Each side runs in its own process, alternately (`--rounds` times each, so both meet the same
machine): the official `mixmim_base` forward (mask ratio 0.5) + backward + AdamW step in float32,
and our `mixmae_jax.measurement.benchmark` on `configs/mixmae_swin_base_w14_600ep.py` at the
same batch on one CPU device, float32. Both use `--threads` threads. Prints the median wall and
CPU seconds per step of each and our speed relative to the official code (> 1: we are faster);
the CPU seconds are the figure to trust on a machine shared with other jobs. Extra
`--config.FIELD=VALUE` flags go to our benchmark (e.g. `--config.model.attention=plain`). Each
`--xla_variant NAME=FLAGS` times our step once more per round with those XLA flags added (e.g.
`onednn=--xla_cpu_use_onednn=true`), so a CPU backend setting is set beside the default and the
official step in the same run.

Needs torch and timm 0.6 (the official code imports it) beside jax; none of the official code is
part of this repository.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_official(args) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  if not hasattr(np, 'float'):  # the official position table uses the alias numpy 1.24 removed
    np.float = float
  sys.path.insert(0, os.path.abspath(args.official_repo))
  import models_mixmim  # pylint: disable=import-outside-toplevel,import-error
  torch.manual_seed(0)
  model = models_mixmim.mixmim_base().train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05,
                                betas=(0.9, 0.95))
  images = torch.randn(args.batch, 3, 224, 224)
  walls, cpus = [], []
  for i in range(args.warmup + args.steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    loss = model(images, mask_ratio=0.5)[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if i >= args.warmup:
      walls.append(time.perf_counter() - start)
      cpus.append(time.process_time() - cpu_start)
  return {'median_step_seconds': statistics.median(walls),
          'median_step_cpu_seconds': statistics.median(cpus), 'torch': torch.__version__}


def time_ours(args, overrides) -> dict:
  sys.path.insert(0, REPO)
  from mixmae_jax.measurement import benchmark  # pylint: disable=import-outside-toplevel
  figures = benchmark.main([
      '--config=' + os.path.join(REPO, 'configs', 'mixmae_swin_base_w14_600ep.py'),
      f'--batch_size={args.batch}', f'--steps={args.steps}', f'--warmup_steps={args.warmup}',
      '--skip_xla_flops', '--config.compute_dtype=float32', *overrides])
  return {k: figures[k] for k in ('median_step_seconds', 'median_step_cpu_seconds',
                                  'jax_version', 'attention', 'scan_blocks', 'remat')}


def parse_variants(specs: List[str]) -> Dict[str, str]:
  """['NAME=FLAGS', ...] -> {'ours:NAME': FLAGS}; a spec without a name or flags is an error."""
  variants = {}
  for spec in specs:
    name, _, flags = spec.partition('=')
    if not name or not flags.startswith('--'):
      raise SystemExit(f'--xla_variant {spec!r}: give NAME=XLA_FLAGS, e.g. '
                       'onednn=--xla_cpu_use_onednn=true')
    variants[f'ours:{name}'] = flags
  return variants


def run_side(side: str, args, overrides, xla_flags: str = '') -> dict:
  """One side in a fresh process with `args.threads` threads; 'compared' is ours from the
  checkout `--compare_repo` (this script there, with its own package); `xla_flags` are added to
  the child's XLA_FLAGS (a variant of ours)."""
  env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), JAX_PLATFORMS='cpu',
             XLA_FLAGS=' '.join(['--xla_force_host_platform_device_count=1', xla_flags]).strip())
  script = __file__
  if side == 'compared':
    side, script = 'ours', os.path.join(args.compare_repo, 'examples', os.path.basename(__file__))
  elif side.startswith('ours:'):
    side = 'ours'
  command = [sys.executable, script, '--side', side, '--official_repo', args.official_repo,
             '--batch', str(args.batch), '--steps', str(args.steps), '--warmup',
             str(args.warmup), '--threads', str(args.threads), *overrides]
  out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [line for line in out.stdout.splitlines() if line.startswith('{"side"')]
  if out.returncode or not lines:
    raise SystemExit(f'the {side} side failed:\n{out.stderr[-3000:]}')
  return json.loads(lines[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--official_repo', required=True)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--side', choices=('official', 'ours'), default=None)
  parser.add_argument('--compare_repo', default='', help='another checkout of this project '
                      '(e.g. before a change): its step is timed as a third side')
  parser.add_argument('--xla_variant', action='append', default=[],
                      help='NAME=XLA_FLAGS: also time our step with these XLA flags added')
  args, overrides = parser.parse_known_args()
  variants = parse_variants(args.xla_variant)
  if args.side:
    result = time_official(args) if args.side == 'official' else time_ours(args, overrides)
    print(json.dumps({'side': args.side, **result}), flush=True)
    return
  sys.path.insert(0, REPO)
  from mixmae_jax.measurement import machine  # pylint: disable=import-outside-toplevel
  cpu = machine.cpu_description()
  print(machine.describe_line(cpu), flush=True)
  runs = {'official': [], 'ours': [], **({'compared': []} if args.compare_repo else {}),
          **{side: [] for side in variants}}
  for _ in range(args.rounds):
    for side in runs:
      runs[side].append(run_side(side, args, overrides, variants.get(side, '')))
      print(f'{side:14s} {runs[side][-1]["median_step_seconds"]:.2f} s/step wall, '
            f'{runs[side][-1]["median_step_cpu_seconds"]:.2f} CPU s/step', flush=True)
  median = {side: {k: statistics.median(r[k] for r in rs) for k in
                   ('median_step_seconds', 'median_step_cpu_seconds')}
            for side, rs in runs.items()}
  ratio_cpu = (median['official']['median_step_cpu_seconds'] /
               median['ours']['median_step_cpu_seconds'])
  ratio_wall = median['official']['median_step_seconds'] / median['ours']['median_step_seconds']
  print(f'ours relative to the official step (> 1: faster): {ratio_cpu:.2f}x in CPU seconds, '
        f'{ratio_wall:.2f}x in wall time; batch {args.batch}, {args.threads} threads, float32')
  for side in runs:
    if side not in ('official', 'ours'):
      label = args.compare_repo if side == 'compared' else f'{side} ({variants[side]})'
      print(f'{label} relative to the official step: ' + ', '.join(
          f'{median["official"][k] / median[side][k]:.2f}x in {name}' for k, name in (
              ('median_step_cpu_seconds', 'CPU seconds'), ('median_step_seconds', 'wall time'))))
  print(json.dumps({'cpu': cpu, 'batch': args.batch, 'threads': args.threads, 'median': median,
                    'xla_variants': variants,
                    'ratio_cpu': ratio_cpu, 'ratio_wall': ratio_wall, 'runs': runs}))


if __name__ == '__main__':
  main()
