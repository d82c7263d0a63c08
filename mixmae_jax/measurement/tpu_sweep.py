"""Every TPU target row, compiled here and kept as JSON; the docs' table is rendered from it.

  mixmae-tpu-sweep --results=docs/tpu_results.jsonl [--chips=v5e,v6e] [--rows=base] [--list]
  mixmae-tpu-sweep --results=docs/tpu_results.jsonl --render=docs/performance.md

Each row is one `mixmae_jax.measurement.benchmark --tpu_topology=... --find_max_batch` call in a
process of its own (a compile that crashes or runs out of host memory costs its row, not the
sweep): the recipe's real step compiled for the chip's slice, XLA's per-device memory plan at
the starting batch, and the largest per-device batch the compiler fits. The rows (`ROWS`):
MixMAE Swin Base, Large and Huge with `remat=block`, scanned and unrolled, replicated and (Huge)
sharded, and every other method's Base recipe, on v4, v5e, v5p and v6e. Rows already in the
results file are kept, so the sweep resumes after an interruption and a rerun only compiles
what is missing; each finished row is appended at once. A scanned row whose compile crashes (not
one that runs out of time or host memory) is compiled again with its params per block
(`model.stacked_params=false`, the fallback for a compiler that fails on the stacked layout);
the table marks it and names the stacked compile's failure.

`--render` rewrites the Markdown between `<!-- tpu-table -->` and `<!-- /tpu-table -->` in the
given file from the results (rows not yet compiled say so), so the table is never typed by hand;
a test checks that the committed table is the rendering of the committed results.
"""
import dataclasses
import functools
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from absl import flags

from mixmae_jax.cli import command
from mixmae_jax.measurement import benchmark_report, machine, watched_process

# A slice of four chips per generation; v4 lists each chip as two TensorCore devices.
CHIPS = {'v4': 'v4:2x2x1', 'v5e': 'v5e:2x2', 'v5p': 'v5p:2x2x1', 'v6e': 'v6e:2x2'}
BEGIN, END = '<!-- tpu-table -->', '<!-- /tpu-table -->'


@dataclasses.dataclass(frozen=True)
class Row:
  """One compiled target: a recipe on a chip, with its state layout and block mode."""
  chip: str
  model: str  # the table's name for it
  config: str  # a config in configs/
  batch: int  # the per-device batch compiled first (and where the search starts)
  scan: bool = False
  sharded: bool = False

  @property
  def key(self) -> str:
    return (f'{self.chip}/{self.model}/{"sharded" if self.sharded else "replicated"}/'
            f'{"scanned" if self.scan else "unrolled"}')

  def flags(self, bytes_per_image: Optional[float] = None, stacked: bool = True) -> List[str]:
    extra = [f'--search_bytes_per_image={bytes_per_image:.0f}'] if bytes_per_image else []
    extra += [] if stacked else ['--config.model.stacked_params=false']
    return [f'--config={self.config}', f'--tpu_topology={CHIPS[self.chip]}',
            f'--batch_size={self.batch}', '--config.model.remat=block',
            f'--config.model.scan_blocks={str(self.scan).lower()}',
            f'--config.state_sharding={"sharded" if self.sharded else "replicated"}',
            '--find_max_batch', '--max_batch_limit=1024', *extra]


# MixMAE at its three sizes (Huge's replicated state does not fit a 16 GiB chip: sharded too)
MIXMAE = (('MixMAE Swin-B/W14 224', 'mixmae_swin_base_w14_600ep', 128, (False,)),
          ('MixMAE Swin-L/W14 224', 'mixmae_swin_large_w14_600ep', 64, (False,)),
          ('MixMAE Swin-H/W14 224', 'mixmae_swin_huge_w14_600ep', 32, (False, True)))
# every other method's Base recipe, as its encoder runs (only Swin stages scan)
OTHERS = (('MAE ViT-B 224', 'mae_vit_base_800ep', 128, False),
          ('MixedAE ViT-B 224', 'mixedae_vit_base_800ep', 128, False),
          ('UM-MAE Swin-T 256', 'ummae_swin_tiny_200ep', 128, False),
          ('SimMIM Swin-B/W6 192', 'simmim_swin_base_192_w6_800ep', 128, True))


def all_rows() -> List[Row]:
  rows = []
  for chip in CHIPS:
    for model, config, batch, shardings in MIXMAE:
      rows += [Row(chip, model, config, batch, scan, sharded)
               for sharded in shardings for scan in (True, False)]
    rows += [Row(chip, model, config, batch, scan) for model, config, batch, scan in OTHERS]
  return rows


ROWS = all_rows()


def read_results(path: str) -> Dict[str, dict]:
  """{row key: its record} from a JSON-lines file (a line cut short by a kill is skipped)."""
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        out[record['row']] = record
  return out


def append_line(path: str, line: str) -> None:
  """Appends one line, first ending a line a kill cut short, so the two stay apart."""
  with open(path, 'a+b') as f:
    cut = False
    if f.tell():  # opened for appending: at the end
      f.seek(-1, os.SEEK_END)
      cut = f.read(1) != b'\n'
    f.write((('\n' if cut else '') + line + '\n').encode())


def bytes_per_image(row: Row, done: Dict[str, dict]) -> Optional[float]:
  """What each image above the first batch cost the same recipe, state and blocks on another
  chip, to place the search's second compile; None when no other chip's row has an answer.

  The slope runs from its first plan to its HBM at its largest batch: near the boundary the
  compiler rematerializes to fit, so plans flatten and a line through them would overshoot;
  where it gave up is what carries over to another chip."""
  for chip in CHIPS:
    record = done.get(dataclasses.replace(row, chip=chip).key) if chip != row.chip else None
    if not record or 'error' in record:
      continue
    first, largest = record['per_device_batch'], record.get('max_per_device_batch') or 0
    plan = (record.get('batches_tried') or {}).get(str(first))
    if largest > first and plan and record.get('hbm_bytes'):
      return (record['hbm_bytes'] - plan) / (largest - first)
  return None


def compile_row(row: Row, timeout: float, hint: Optional[float] = None,
                host_memory: Optional[int] = None, stacked: bool = True) -> dict:
  """The benchmark's figures for one row, from a process of its own (`hint`: bytes per image
  for the search, see `bytes_per_image`; `stacked=False`: a scanned row's params per block),
  with the host memory its compiles peaked at; an error record when it fails, stops past
  `host_memory` bytes resident, or is killed (`stopped_by_limit`: the sweep's own limits stopped
  it, rather than the compile failing by itself)."""
  argv = [sys.executable, '-m', 'mixmae_jax.measurement.benchmark', *row.flags(hint, stacked)]
  out = watched_process.run(argv, timeout, host_memory)
  lines = [line for line in out.stdout.splitlines() if line.startswith('{')]
  failure = out.failure or (None if lines else 'exit 0: no JSON line in its output')
  if failure:
    return {'error': failure, 'stopped_by_limit': out.stopped is not None,
            'host_peak_rss_bytes': out.peak_rss_bytes}
  return {**json.loads(lines[-1]), 'host_peak_rss_bytes': out.peak_rss_bytes}


def compile_with_fallback(row: Row, timeout: float, hint: Optional[float],
                          compile_fn=compile_row) -> dict:
  """`compile_fn`'s record; for a scanned row whose stacked compile crashed, the record of
  its compile with params per block, keeping the crash as `stacked_error`. A row the sweep's
  own limits stopped (time, host memory) is not retried: the other layout would meet them too."""
  record = compile_fn(row, timeout, hint)
  if 'error' not in record or not row.scan or record.get('stopped_by_limit'):
    return record
  print(f'  stacked params failed ({record["error"][:100]}); compiling with params per block',
        flush=True)
  fallback = compile_fn(row, timeout, hint, stacked=False)
  if 'error' in fallback:
    # a limit met by the fallback is the row's limit too: a rerun should know it needs more
    return {**record, 'error': f'{record["error"]}; with params per block: {fallback["error"]}',
            'stopped_by_limit': bool(fallback.get('stopped_by_limit'))}
  return {**fallback, 'stacked_error': record['error']}


def sweep(rows: Sequence[Row], results: str, timeout: float,
          compile_fn=compile_row) -> Dict[str, dict]:
  """Compiles the rows missing from `results`, appending each record as it finishes."""
  done = read_results(results)
  for row in rows:
    if row.key in done and 'error' not in done[row.key]:
      continue
    print(f'compiling {row.key}', flush=True)
    # the row's own fields last: the benchmark's `config` is the path it resolved, which names
    # this machine's checkout rather than the config
    hint = bytes_per_image(row, done)
    record = {**compile_with_fallback(row, timeout, hint, compile_fn), 'row': row.key,
              **dataclasses.asdict(row), 'search_bytes_per_image': hint}
    append_line(results, json.dumps(record))
    done[row.key] = record
  return done


def row_state(record: Optional[dict]) -> str:
  """'done', 'failed' (a record naming its error) or 'missing'."""
  if record is None:
    return 'missing'
  return 'failed' if 'error' in record else 'done'


def _gib(n: Optional[float]) -> str:
  return benchmark_report.gib(n, missing='-', unit='')


def table_line(row: Row, record: Optional[dict]) -> str:
  state = 'sharded' if row.sharded else 'replicated'
  blocks = 'scanned' if row.scan else 'unrolled'
  if record and record.get('stacked_error'):
    blocks += ' (params per block)'
  head = f'| {row.chip} | {row.model} | {state} | {blocks}, remat block |'
  if record is None:
    return head + ' not compiled yet | | | | | |'
  if 'error' in record:
    return head + f' failed: {record["error"][:120]} | | | | | |'
  plan = record.get('memory_plan') or {}
  memory = (f'{_gib(plan.get("argument"))} / {_gib(plan.get("temp"))} / '
            f'{_gib(plan.get("total"))}' if plan else 'refused: out of HBM')
  largest = record.get('max_per_device_batch')
  # a plan over HBM is still a plan: it says by how much the row's own batch misses
  over = ' (over HBM)' if plan and record.get('fits') is False else ''
  return (f'{head} {record["per_device_batch"]}{over} | {memory} | '
          f'{record["compile_seconds"]:.0f} ({record["compile_cpu_seconds"]:.0f}) | '
          f'{"-" if largest is None else largest} | {_gib(record.get("hbm_bytes"))} | '
          f'{_gib(record.get("host_peak_rss_bytes"))} |')


def render(results: Dict[str, dict], rows: Sequence[Row] = ROWS) -> str:
  """The Markdown table of every row, in ROWS order."""
  versions = sorted({f'jax {r["jax_version"]}' for r in results.values() if 'jax_version' in r})
  states = [row_state(results.get(row.key)) for row in rows]
  failed = f', {states.count("failed")} failed' if 'failed' in states else ''
  lines = [f'Rows compiled: {states.count("done")} of {len(rows)}{failed}'
           + (f' ({", ".join(versions)})' if versions else '') + '.', '',
           '| chip | model | state | blocks | images per device | GiB per device: arguments / '
           'temporaries / total | compile s (CPU s) | largest batch | HBM GiB | host GiB |',
           '|---|---|---|---|---|---|---|---|---|---|']
  lines += [table_line(row, results.get(row.key)) for row in rows]
  fallbacks = [(row.key, results[row.key]['stacked_error']) for row in rows
               if (results.get(row.key) or {}).get('stacked_error')]
  if fallbacks:
    lines += ['', 'Compiled with `model.stacked_params=false` where the stacked layout failed:']
    lines += [f'- {key}: {error[:200]}' for key, error in fallbacks]
  return '\n'.join(lines)


def write_table(path: str, table: str) -> None:
  """Replace the text between the markers in `path` with `table`."""
  with open(path) as f:
    text = f.read()
  if BEGIN not in text or END not in text:
    command.fail(f'{path} has no {BEGIN} ... {END} markers to put the table between')
  head, rest = text.split(BEGIN, 1)
  tail = rest.split(END, 1)[1]
  with open(path, 'w') as f:
    f.write(f'{head}{BEGIN}\n{table}\n{END}{tail}')


def main(argv: Optional[Sequence[str]] = None) -> None:
  fv = flags.FlagValues()
  flags.DEFINE_string('results', None, 'the JSON-lines file of compiled rows (kept, appended)',
                      flag_values=fv)
  flags.DEFINE_list('chips', list(CHIPS), f'a subset of {",".join(CHIPS)}', flag_values=fv)
  flags.DEFINE_list('rows', [], 'only rows whose key contains one of these (e.g. Swin-B,sharded)',
                    flag_values=fv)
  flags.DEFINE_float('timeout', 3600.0, 'seconds one row may take', flag_values=fv)
  flags.DEFINE_float('host_memory_gib', 0.0, 'stop a row whose compile holds more host memory '
                     'than this (0: 90% of this machine\'s RAM, below the kernel\'s OOM killer)',
                     flag_values=fv)
  flags.DEFINE_bool('list', False, 'print the rows and whether each is compiled', flag_values=fv)
  flags.DEFINE_string('render', '', 'write the table into this Markdown file (no compiling)',
                      flag_values=fv)
  flags.mark_flag_as_required('results', flag_values=fv)
  args, _ = command.parse(__doc__, fv, argv, 'tpu_sweep')
  unknown = sorted(set(args.chips) - set(CHIPS))
  if unknown:
    command.fail(f'--chips: unknown {unknown}; choose from {",".join(CHIPS)}')
  rows = [r for r in ROWS if r.chip in args.chips and
          (not args.rows or any(part in r.key for part in args.rows))]
  if args.render or args.list:
    results = read_results(args.results)
    if args.list:
      for row in rows:
        print(f'{row_state(results.get(row.key)):7} {row.key}')
    if args.render:
      write_table(args.render, render(results))
    return
  ceiling = args.host_memory_gib * 2**30 or 0.9 * machine.physical_memory_bytes()
  sweep(rows, args.results, args.timeout,
        functools.partial(compile_row, host_memory=int(ceiling)))
  print(render(read_results(args.results), rows))


if __name__ == '__main__':
  command.run_main(main)
