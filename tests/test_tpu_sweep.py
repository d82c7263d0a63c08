"""The TPU sweep: its rows, resuming from the results file, and the docs' table as its rendering.

Compiling a real row takes minutes (tests/test_tpu_compile.py compiles a tiny step for a v5e
slice); here the compile is injected so the sweep's bookkeeping is what is tested.
"""
import json
import pathlib

import pytest

from mixmae_jax.measurement import tpu_sweep, watched_process

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'docs' / 'tpu_results.jsonl'
DOC = REPO / 'docs' / 'performance.md'


def _figures(row, timeout, hint=None):
  del timeout, hint
  return {'per_device_batch': row.batch, 'compile_seconds': 10.0, 'compile_cpu_seconds': 9.0,
          'memory_plan': {'argument': 2**30, 'temp': 2 * 2**30, 'total': 3 * 2**30},
          'max_per_device_batch': 2 * row.batch, 'hbm_bytes': 16 * 2**30, 'jax_version': '0.x',
          'config': f'/home/someone/checkout/configs/{row.config}.py'}


def test_every_chip_has_every_model_in_both_block_modes():
  keys = [r.key for r in tpu_sweep.ROWS]
  assert len(keys) == len(set(keys)) == 4 * 12
  for chip in tpu_sweep.CHIPS:
    mine = [r for r in tpu_sweep.ROWS if r.chip == chip]
    assert {(r.model, r.scan) for r in mine if r.model.startswith('MixMAE')} == {
        (m, s) for m, *_ in tpu_sweep.MIXMAE for s in (True, False)}
    assert sum(r.sharded for r in mine) == 2  # Huge, scanned and unrolled
  row = tpu_sweep.ROWS[0]
  assert '--find_max_batch' in row.flags() and '--config.model.remat=block' in row.flags()


def test_the_sweep_resumes_keeps_finished_rows_and_retries_failed_ones(tmp_path):
  results = tmp_path / 'results.jsonl'
  rows = tpu_sweep.ROWS[:3]
  calls = []

  def failing_second(row, timeout, hint):
    calls.append(row.key)
    return {'error': 'exit 1: boom'} if row is rows[1] else _figures(row, timeout, hint)

  tpu_sweep.sweep(rows, str(results), 60, failing_second)
  # a failed row is counted as failed, not as compiled
  assert 'Rows compiled: 2 of 3, 1 failed' in tpu_sweep.render(
      tpu_sweep.read_results(str(results)), rows)
  with open(results, 'a') as f:
    f.write('{"row": "cut sh')  # a kill mid-append leaves half a line
  calls.clear()
  done = tpu_sweep.sweep(rows, str(results), 60, lambda r, t, h: calls.append(r.key) or
                         _figures(r, t))
  assert calls == [rows[1].key]  # only the failed row compiles again
  assert all('error' not in done[r.key] for r in rows)
  # the record names the config, not the path it had on the machine that compiled it
  assert all(done[r.key]['config'] == r.config for r in rows)
  table = tpu_sweep.render(tpu_sweep.read_results(str(results)), rows)
  assert 'Rows compiled: 3 of 3' in table
  assert f'| {rows[0].batch} | 1.00 / 2.00 / 3.00 | 10 (9) | {2 * rows[0].batch} | 16.00 |' in table


def test_a_row_done_on_another_chip_places_the_next_chips_search(tmp_path):
  """The same recipe's memory per image on one chip is handed to its search on the next, so
  its second compile lands near the answer; rows with no such record get no hint."""
  base = [r for r in tpu_sweep.ROWS if r.model.startswith('MixMAE Swin-B') and r.scan]
  v4, v5e = [next(r for r in base if r.chip == chip) for chip in ('v4', 'v5e')]
  other = next(r for r in tpu_sweep.ROWS if r.chip == 'v5e' and not r.scan)
  hints = {}

  def figures(row, timeout, hint):
    hints[row.key] = hint
    record = _figures(row, timeout)
    record['batches_tried'] = {str(row.batch): 3 * 2**30, str(2 * row.batch): 7 * 2**30}
    return record

  done = tpu_sweep.sweep([v4, v5e, other], str(tmp_path / 'r.jsonl'), 60, figures)
  per_image = (16 - 3) * 2**30 / v4.batch  # from the first plan to HBM at the largest batch
  assert hints == {v4.key: None, v5e.key: per_image, other.key: None}
  assert done[v5e.key]['search_bytes_per_image'] == per_image
  assert f'--search_bytes_per_image={per_image:.0f}' in v5e.flags(per_image)
  assert not any(f.startswith('--search_bytes') for f in v5e.flags())


def test_a_scanned_row_whose_stacked_compile_crashes_is_compiled_with_params_per_block(
    tmp_path):
  """libtpu aborts on some stacked steps: the row is compiled again with its params per block
  and the table says so, naming the crash; limits of the sweep (time, host memory) and
  unrolled rows are not retried, and a fallback that fails too keeps both errors."""
  huge = [r for r in tpu_sweep.ROWS if r.chip == 'v5e' and r.sharded]
  scanned, unrolled = [next(r for r in huge if r.scan is s) for s in (True, False)]
  crash = 'killed by SIGABRT at 3.6 GiB resident: emitter.cc:1904] Check failed: s_count'
  calls = []

  def figures(row, timeout, hint, stacked=True):
    calls.append((row.key, stacked))
    return {'error': crash} if stacked else dict(_figures(row, timeout), stacked_params=False)

  done = tpu_sweep.sweep([scanned, unrolled], str(tmp_path / 'r.jsonl'), 60, figures)
  assert calls == [(scanned.key, True), (scanned.key, False), (unrolled.key, True)]
  assert done[scanned.key]['stacked_error'] == crash and 'error' not in done[scanned.key]
  assert 'error' in done[unrolled.key]
  table = tpu_sweep.render(done, [scanned, unrolled])
  assert 'Rows compiled: 1 of 2, 1 failed' in table
  assert '| scanned (params per block), remat block | 32 | 1.00 / 2.00 / 3.00 |' in table
  assert f'- {scanned.key}: {crash}' in table
  assert '--config.model.stacked_params=false' in scanned.flags(stacked=False)
  assert not any('stacked_params' in f for f in scanned.flags())

  # what decides is the record's `stopped_by_limit`, not the wording of its message
  for error, limit, tries in (('no answer within 60 s', True, [True]),
                              ('stopped past the host-memory ceiling', True, [True]),
                              ('no answer within the emitter: Check failed', False, [True, False])):
    calls.clear()
    record = tpu_sweep.compile_with_fallback(
        scanned, 60, None, lambda r, t, h, stacked=True, e=error, lim=limit: calls.append(stacked)
        or ({'error': e, 'stopped_by_limit': lim} if stacked else _figures(r, t)))
    assert calls == tries
    assert record == {'error': error, 'stopped_by_limit': True} if limit else 'error' not in record
  both = tpu_sweep.compile_with_fallback(scanned, 60, None,
                                         lambda r, t, h, stacked=True: {'error': f'boom {stacked}'})
  assert both['error'] == 'boom True; with params per block: boom False'
  assert not both['stopped_by_limit']
  # the stacked compile crashed, the fallback ran out of time: the row records the limit
  limited = tpu_sweep.compile_with_fallback(
      scanned, 60, None, lambda r, t, h, stacked=True: {'error': 'crash'} if stacked
      else {'error': 'no answer within 60 s', 'stopped_by_limit': True})
  assert limited['stopped_by_limit'] and limited['error'].endswith('no answer within 60 s')


def test_rows_not_compiled_or_refused_say_so():
  row = tpu_sweep.ROWS[0]
  refused = dict(_figures(row, 0), memory_plan=None, max_per_device_batch=24)
  assert 'not compiled yet' in tpu_sweep.table_line(row, None)
  assert 'failed: exit 1' in tpu_sweep.table_line(row, {'error': 'exit 1: boom'})
  assert 'refused: out of HBM' in tpu_sweep.table_line(row, refused)
  over = dict(_figures(row, 0), fits=False, max_per_device_batch=row.batch // 2)
  assert f'| {row.batch} (over HBM) | 1.00 / 2.00 / 3.00 |' in tpu_sweep.table_line(row, over)
  assert '(over HBM)' not in tpu_sweep.table_line(row, dict(over, fits=True))


def test_compile_row_keeps_the_host_peak_and_names_a_kill(monkeypatch):
  row, seen = tpu_sweep.ROWS[0], {}

  def run(argv, timeout, max_rss_bytes):
    seen.update(argv=argv, timeout=timeout, ceiling=max_rss_bytes)
    return outcome

  monkeypatch.setattr(tpu_sweep.watched_process, 'run', run)
  outcome = watched_process.Finished(0, 'log line\n{"per_device_batch": 128}\n', '', 5 * 2**30)
  assert tpu_sweep.compile_row(row, 60, 1e6, host_memory=20 * 2**30) == {
      'per_device_batch': 128, 'host_peak_rss_bytes': 5 * 2**30}
  assert seen['ceiling'] == 20 * 2**30 and '--search_bytes_per_image=1000000' in seen['argv']
  outcome = watched_process.Finished(-9, '', 'compiling...\n', 23 * 2**30)
  killed = tpu_sweep.compile_row(row, 60)
  assert killed['error'].startswith('killed by SIGKILL (the host out-of-memory killer')
  assert killed['host_peak_rss_bytes'] == 23 * 2**30 and not killed['stopped_by_limit']
  outcome = watched_process.Finished(-9, '', '', 2**30, stopped='no answer within 60 s')
  assert tpu_sweep.compile_row(row, 60) == {
      'error': 'no answer within 60 s', 'stopped_by_limit': True, 'host_peak_rss_bytes': 2**30}
  assert 'killed by SIGKILL' in tpu_sweep.table_line(row, killed)
  outcome = watched_process.Finished(0, 'no figures\n', '', 2**30)
  assert tpu_sweep.compile_row(row, 60)['error'] == 'exit 0: no JSON line in its output'


def test_the_table_gives_the_host_memory_a_row_compiled_with():
  row = tpu_sweep.ROWS[0]
  line = tpu_sweep.table_line(row, dict(_figures(row, 0), host_peak_rss_bytes=9.5 * 2**30))
  assert line.endswith('| 9.50 |')
  assert tpu_sweep.table_line(row, _figures(row, 0)).endswith('| - |')  # compiled before


def test_write_table_replaces_only_the_marked_block(tmp_path):
  doc = tmp_path / 'doc.md'
  doc.write_text(f'before\n{tpu_sweep.BEGIN}\nold\n{tpu_sweep.END}\nafter\n')
  tpu_sweep.write_table(str(doc), 'new')
  assert doc.read_text() == f'before\n{tpu_sweep.BEGIN}\nnew\n{tpu_sweep.END}\nafter\n'
  plain = tmp_path / 'plain.md'
  plain.write_text('no markers\n')
  with pytest.raises(SystemExit):
    tpu_sweep.write_table(str(plain), 'x')
  assert plain.read_text() == 'no markers\n'


def test_the_docs_table_is_the_rendering_of_the_committed_results():
  results = tpu_sweep.read_results(str(RESULTS))
  assert all(json.loads(line)['row'] in {r.key for r in tpu_sweep.ROWS}
             for line in RESULTS.read_text().splitlines() if line.strip())
  text = DOC.read_text()
  committed = text.split(tpu_sweep.BEGIN, 1)[1].split(tpu_sweep.END, 1)[0].strip()
  assert committed == tpu_sweep.render(results), (
      'docs/performance.md\'s TPU table is not the rendering of docs/tpu_results.jsonl: run '
      'mixmae-tpu-sweep --results=docs/tpu_results.jsonl --render=docs/performance.md')
