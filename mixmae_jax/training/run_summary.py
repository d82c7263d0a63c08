"""The end-of-run summary a command prints: the final figures, the time, where things are.

  finished in 3 min 12 s: step 300, loss 0.4123
    checkpoint   /tmp/demo/checkpoints/300
    pictures     /tmp/demo/reconstructions/step_0000300.png
    metrics      /tmp/demo/metrics.jsonl (TensorBoard: tensorboard --logdir /tmp/demo)
"""
import json
import os
from typing import Dict, List, Optional

from mixmae_jax.training.checkpointing import checkpoint_dir
from mixmae_jax.training.pictures import PICTURE_DIR
from mixmae_jax.training.workdir import STATUS

# Figures worth a user's first glance, in this order, when a run returns them.
HEADLINE = ('loss', 'eval_top1', 'best_top1', 'knn_top1', 'eval_top5', 'knn_top5')


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60} min'


def _newest(directory: str, digits_only: bool = False) -> Optional[str]:
  """The entry of `directory` that sorts last (checkpoint steps numerically), or None."""
  try:
    names = os.listdir(directory)
  except OSError:
    return None
  if digits_only:
    names = sorted((n for n in names if n.isdigit()), key=int)
  else:
    names = sorted(n for n in names if not n.startswith('.'))
  return os.path.join(directory, names[-1]) if names else None


def _step(workdir: str) -> Optional[int]:
  try:
    with open(os.path.join(workdir, STATUS), encoding='utf-8') as f:
      return json.load(f).get('step')
  except (OSError, ValueError):
    return None


def text(workdir: str, results: Optional[Dict[str, float]], seconds: float) -> str:
  """The summary of the run that just ended in `workdir` (`results`: what it returned)."""
  results = results if isinstance(results, dict) else {}
  figures = [f'{k} {results[k]:.4g}' for k in HEADLINE
             if isinstance(results.get(k), (int, float))]
  step = _step(workdir)
  head = ', '.join(([f'step {step}'] if step is not None else []) + figures)
  lines: List[str] = [f'finished in {duration(seconds)}' + (f': {head}' if head else '')]
  rows = [('checkpoint', _newest(checkpoint_dir(workdir), digits_only=True)),
          ('pictures', _newest(os.path.join(workdir, PICTURE_DIR)))]
  metrics = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(metrics):
    rows.append(('metrics', f'{metrics} (TensorBoard: tensorboard --logdir {workdir})'))
  lines += [f'  {name:12s} {where}' for name, where in rows if where]
  return '\n'.join(lines)
