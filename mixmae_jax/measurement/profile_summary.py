"""Where a traced step's device time goes: XLA's kernels grouped by kind, from a profile trace.

  python -m mixmae_jax.measurement.profile_summary DIR [--top=15]

DIR is a `--profile_dir` of the benchmark or a run's `WORKDIR/tensorboard` after `profile_steps`
(the newest `*.trace.json.gz` under it is read). Kernel events are grouped by their name without
the numeric suffix XLA adds (`ynn_fusion.12` -> `ynn_fusion`: the matmul and convolution
fusions on CPU; `copy_bitcast_fusion`: layout copies; `*_fusion`: fused elementwise work), and
printed with their share of all kernel time. Runtime wrappers (the executor, waits) and Python
frames are left out. The last line is JSON.
"""
import collections
import glob
import gzip
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from absl import flags

from mixmae_jax.cli import command

# Events that wrap or wait for kernels rather than being one.
_WRAPPERS = re.compile(r'^(ThunkExecutor|SlinkyThreadPool|CommonPjRt|PjitFunction|PjRt|\$)')


def newest_trace(directory: str) -> str:
  traces = glob.glob(os.path.join(directory, '**', '*.trace.json.gz'), recursive=True)
  if not traces:
    raise SystemExit(f'no *.trace.json.gz under {directory}: trace a step first (benchmark '
                     f'--profile_dir, or profile_steps in a run)')
  return max(traces, key=os.path.getmtime)


def kernel_seconds(trace: Dict) -> Dict[str, float]:
  """Seconds of kernel time by kernel kind."""
  threads = {(e['pid'], e['tid']): e['args']['name'] for e in trace['traceEvents']
             if e.get('ph') == 'M' and e.get('name') == 'thread_name'}
  out = collections.Counter()
  for event in trace['traceEvents']:
    if event.get('ph') != 'X' or _WRAPPERS.match(event['name']):
      continue
    if threads.get((event['pid'], event['tid']), '') == 'python':
      continue
    out[re.sub(r'[.\d]+$', '', event['name'])] += event.get('dur', 0) / 1e6
  return dict(out)


def summary(directory: str, top: int) -> Dict[str, object]:
  with gzip.open(newest_trace(directory)) as f:
    seconds = kernel_seconds(json.load(f))
  total = sum(seconds.values())
  ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
  return {'trace_dir': directory, 'kernel_seconds': total,
          'kinds': [{'kind': k, 'seconds': v, 'share': v / total if total else 0.0}
                    for k, v in ranked[:top]]}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
  fv = flags.FlagValues()
  flags.DEFINE_integer('top', 15, 'kinds of kernel listed', flag_values=fv)
  args, positional = command.parse(__doc__, fv, argv, 'profile_summary')
  if len(positional) != 1:
    command.fail(f'expected one trace directory, got {positional or "none"} (see --help)')
  result = summary(positional[0], args.top)
  lines: List[str] = [f'kernel time {result["kernel_seconds"]:.3f} s (all threads)']
  for row in result['kinds']:
    lines.append(f'{100 * row["share"]:5.1f}%  {row["seconds"]:8.3f} s  {row["kind"]}')
  print('\n'.join(lines))
  print(json.dumps(result), flush=True)
  return result


if __name__ == '__main__':
  command.run_main(main)
