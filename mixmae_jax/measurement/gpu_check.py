"""The GPU check: one command that measures what a GPU machine is for, in a few minutes.

  mixmae-gpu-check [--official_repo=/path/to/MixMIM]   # the step figures, a few minutes
  mixmae-gpu-check --find_max_batch                    # the largest batches, a second call
  mixmae-gpu-check --toy                               # the same sequence, small, on a CPU

For MixMAE Swin-B/W14 (`mixmae_swin_base_w14_600ep`) and MAE ViT-B (`mae_vit_base_800ep`), at
bf16 compute, with remat off and with `remat=block`: the real train step's compile seconds,
images/s, MFU and peak device memory; with `--find_max_batch` instead the largest per-device
batch that runs (the benchmark's search, which compiles several programs per row and so gets a
call of its own within the lent machine's 10-minute limit per command). With `--official_repo`
(a clone of the official MixMIM code) and torch on a CUDA device, the official `mixmim_base`
step (AdamW) under PyTorch AMP (bf16) at the same batch, so the two are side by side on one GPU.
Every figure is one JSON line on stdout:

  {"check": "ours", "config": "...", "remat": "block", "figure": "images_per_sec", "value": ...,
   "device": "NVIDIA H100 80GB HBM3"}

`--toy` runs the same sequence on the small demo configs (no batch search: a CPU has no memory
limit to find), which is what the test suite does. The benchmark's own report goes to stderr.
Running it on a lent GPU machine: docs/performance.md, "The GPU check".
"""
import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import flags

from mixmae_jax.cli import command

FULL = {'mixmae': 'mixmae_swin_base_w14_600ep', 'mae': 'mae_vit_base_800ep'}
TOY = {'mixmae': 'demo', 'mae': 'mae_demo'}
FIGURES = ('compile_seconds', 'images_per_sec', 'mfu', 'peak_memory_bytes',
           'max_per_device_batch', 'median_step_seconds')


def emit(record: Dict[str, object]) -> None:
  print(json.dumps(record), flush=True)


def ours(name: str, config: str, remat: str, batch: int, steps: int, search: bool,
         limit: int) -> Dict[str, object]:
  """The benchmark's figures for one config and remat policy, each emitted as a JSON line."""
  from mixmae_jax.measurement import benchmark  # pylint: disable=import-outside-toplevel
  argv = [f'--config={config}', '--config.compute_dtype=bfloat16',
          f'--config.model.remat={remat}', f'--batch_size={batch}', f'--steps={steps}',
          '--warmup_steps=2', '--skip_xla_flops']
  if search:
    argv += ['--find_max_batch', f'--max_batch_limit={limit}']
  with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the figure lines
    figures = benchmark.main(argv)
  for figure in FIGURES:
    if figures.get(figure) is not None:
      emit({'check': 'ours', 'method': name, 'config': config, 'remat': remat, 'batch': batch,
            'figure': figure, 'value': figures[figure], 'device': figures.get('device_kind')})
  return figures


def official(repo: str, batch: int, steps: int) -> Optional[Dict[str, float]]:
  """The official MixMIM-B step under PyTorch AMP (bf16) on the first CUDA device, or None when
  torch, timm or CUDA is missing (said in one JSON line)."""
  try:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    emit({'check': 'official', 'skipped': 'torch is not installed'})
    return None
  if not torch.cuda.is_available():
    emit({'check': 'official', 'skipped': 'no CUDA device for torch'})
    return None
  if not hasattr(np, 'float'):  # the official position table uses the alias numpy 1.24 removed
    np.float = float
  sys.path.insert(0, os.path.abspath(repo))  # the official module imports its siblings
  # the user's clone of the official code, not a dependency of this package
  models_mixmim = importlib.import_module('models_mixmim')
  torch.manual_seed(0)
  model = models_mixmim.mixmim_base().cuda().train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05,
                                betas=(0.9, 0.95))
  images = torch.randn(batch, 3, 224, 224, device='cuda')
  torch.cuda.reset_peak_memory_stats()
  seconds = []
  for i in range(2 + steps):
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast('cuda', dtype=torch.bfloat16):
      loss = model(images, mask_ratio=0.5)[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize()
    if i >= 2:
      seconds.append(time.perf_counter() - start)
  step = statistics.median(seconds)
  figures = {'median_step_seconds': step, 'images_per_sec': batch / step,
             'peak_memory_bytes': torch.cuda.max_memory_allocated()}
  for figure, value in figures.items():
    emit({'check': 'official', 'method': 'mixmae', 'batch': batch, 'figure': figure,
          'value': value, 'device': torch.cuda.get_device_name(0), 'torch': torch.__version__})
  return figures


def run(toy: bool, official_repo: str, batch: int, steps: int, search: bool,
        limit: int) -> List[Dict]:
  configs = TOY if toy else FULL
  batch = batch or (8 if toy else 128)
  results = []
  for name, config in configs.items():
    for remat in ('none', 'block'):
      results.append(ours(name, config, remat, batch, 1 if search else steps,
                          search and not toy, limit))
  if official_repo and not search:
    results.append(official(official_repo, batch, steps))
  return results


def main(argv: Optional[Sequence[str]] = None) -> int:
  fv = flags.FlagValues()
  flags.DEFINE_bool('toy', False, 'the small demo configs, no batch search (the test\'s run)',
                    flag_values=fv)
  flags.DEFINE_string('official_repo', '', 'a clone of the official MixMIM code: also time its '
                      'step under PyTorch AMP on the same GPU', flag_values=fv)
  flags.DEFINE_integer('batch_size', 0, 'images per device per step (default 128; 8 with '
                       '--toy)', flag_values=fv)
  flags.DEFINE_integer('steps', 10, 'steps timed per measurement', flag_values=fv)
  flags.DEFINE_bool('find_max_batch', False, 'search each row\'s largest per-device batch '
                    '(ignored with --toy)', flag_values=fv)
  flags.DEFINE_integer('max_batch_limit', 1024, 'the largest per-device batch the search tries',
                       flag_values=fv)
  args, rest = command.parse(__doc__, fv, argv, 'gpu_check')
  if rest:
    command.fail(f'unexpected arguments {rest} (see --help)')
  started = time.perf_counter()
  run(args.toy, args.official_repo, args.batch_size, args.steps, args.find_max_batch,
      args.max_batch_limit)
  emit({'check': 'done', 'seconds': time.perf_counter() - started})
  return 0


if __name__ == '__main__':
  command.run_main(main)
