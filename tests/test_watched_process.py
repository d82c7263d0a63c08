"""A child run under a time limit and a host-memory ceiling: each way it can end is injected."""
import sys

import pytest

from mixmae_jax.measurement import watched_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='reads /proc and wait4 resource usage')
MiB = 2**20


def _python(code, timeout=30.0, max_rss_bytes=None):
  return watched_process.run([sys.executable, '-c', code], timeout, max_rss_bytes)


def test_a_clean_exit_keeps_its_output_and_peak_memory():
  # 4 MiB of output: more than a pipe holds, so a child left writing to one would block
  done = _python('import sys; sys.stdout.write("x" * (4 << 20)); print("{}")')
  assert (done.returncode, done.failure, done.stopped) == (0, None, None)
  assert done.stdout.endswith('{}\n') and len(done.stdout) > 4 * MiB
  assert done.peak_rss_bytes > 4 * MiB  # the interpreter and its 4 MiB string


def test_a_failing_exit_is_named_by_its_last_stderr_line():
  done = _python('import sys; print("first", file=sys.stderr); sys.exit("last words")')
  assert done.failure == 'exit 1: last words'


def test_a_child_past_the_memory_ceiling_is_stopped_and_named():
  grow = 'import time; b = bytearray(400 << 20); b[::4096] = b"x" * len(b[::4096]); time.sleep(60)'
  done = _python(grow, max_rss_bytes=150 * MiB)
  assert done.returncode == -9
  assert done.failure.startswith('stopped at ') and 'ceiling of 0.1 GiB' in done.failure
  assert done.peak_rss_bytes > 150 * MiB


def test_a_child_under_the_ceiling_runs_to_its_end():
  done = _python('b = bytearray(20 << 20); b[::4096] = b"x" * len(b[::4096])',
                 max_rss_bytes=400 * MiB)
  assert done.failure is None and done.peak_rss_bytes > 20 * MiB


def test_a_child_past_its_time_is_stopped():
  done = _python('import time; time.sleep(60)', timeout=0.5)
  assert done.returncode == -9 and done.failure == 'no answer within 0.5 s'


def test_a_kill_from_outside_names_the_signal_and_the_likely_killer():
  # what the kernel's out-of-memory killer leaves: a SIGKILL nobody here sent
  done = _python('import os, signal; os.kill(os.getpid(), signal.SIGKILL)')
  assert done.stopped is None and done.returncode == -9
  assert done.failure.startswith('killed by SIGKILL (the host out-of-memory killer, most likely)')
  terminated = _python('import os, signal; os.kill(os.getpid(), signal.SIGTERM)')
  assert terminated.failure.startswith('killed by SIGTERM at ')


def test_an_abort_names_the_compilers_fatal_check():
  # what libtpu leaves when one of its checks fails mid-compile: a fatal log line, then SIGABRT
  done = _python(
      'import os, sys; sys.stderr.write("W1207 07:00:33.9 3310 x.cc:1] a warning\\n'
      'F1207 07:00:34.050377    3310 emitter.cc:1904] Check failed: s_count.has_value() \\n'
      '*** Check failure stack trace: ***\\n"); sys.stderr.flush(); os.abort()')
  assert done.returncode == -6
  assert done.failure.startswith('killed by SIGABRT at ')
  assert done.failure.endswith(' GiB resident: emitter.cc:1904] Check failed: s_count.has_value()')
