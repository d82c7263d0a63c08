"""What the command-line entry points share: their flags, how a process starts and how it ends.

`mixmae_jax.train` and `mixmae_jax.finetune` take the same flags (`--config`, `--workdir`, the
multi-process flags) and start the same way; each only names the function it runs. A mistyped
config field is one line naming the field (and the field it probably meant); the errors a user
can act on (an impossible config, a workdir in use or unwritable, unreadable checkpoints, another
architecture, a non-finite step, a bad multi-process setup) are one message without a traceback.
Exit codes: 0 finished, 75 preempted (rerun to resume), 1 failed (see `workdir.py`).
"""
import datetime
import logging
import os
import sys
import time
import traceback
from typing import Callable, List, Optional

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mixmae_jax.cli import command, startup
from mixmae_jax.data import DataError
from mixmae_jax.training import distributed, peer_watch, run_summary
from mixmae_jax.training.architecture_match import ArchitectureMismatch
from mixmae_jax.training.checkpointing import CheckpointError
from mixmae_jax.training.config_checks import ConfigError
from mixmae_jax.training.step_metrics import NonFiniteLoss
from mixmae_jax.training.stop_signal import Preempted
from mixmae_jax.training.workdir import (FAILED_EXIT_CODE, PREEMPTED_EXIT_CODE, LeaseLost,
                                         WorkdirError)

FLAGS = flags.FLAGS
log = logging.getLogger(__name__)

# Errors whose message says all a user needs: printed alone, without a traceback.
USER_ERRORS = (ConfigError, WorkdirError, CheckpointError, ArchitectureMismatch, NonFiniteLoss,
               DataError, distributed.DistributedSetupError)
ERROR_LOG = 'errors.log'


def error_line(error: BaseException, workdir: Optional[str]) -> str:
  """The one `error:` line of a user error. When a lower-level exception caused it (an OS or
  storage error under a failed save), its traceback goes to WORKDIR/errors.log and the line
  says so."""
  line = f'error: {error}'
  if error.__cause__ is None or not workdir or isinstance(error, LeaseLost):
    return line  # a run that lost its lease writes nothing into the workdir
  path = os.path.join(workdir, ERROR_LOG)
  try:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(f'--- {datetime.datetime.now(datetime.timezone.utc).isoformat()} pid '
              f'{os.getpid()}\n{line}\n')
      f.write(''.join(traceback.format_exception(error)))
  except OSError:
    return line
  return f'{line} (details in {path})'


OWN_FLAGS = ('config', 'workdir', 'coordinator_address', 'num_processes', 'process_id',
             'initialization_timeout', 'peer_timeout')


def define_multiprocess_flags() -> None:
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for multi-process runs JAX cannot set up itself '
                      '(TPU pods, SLURM, Open MPI and Kubernetes indexed Jobs need no flags).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run '
                       '(1: run alone even inside a detected cluster).')
  flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
  flags.DEFINE_integer('initialization_timeout', 300,
                       'Seconds to wait for every process of a multi-process run to join.')
  flags.DEFINE_float('peer_timeout', 60.0,
                     'Seconds without a sign of life from another process of a multi-process '
                     'run before this one stops with exit code 1 (status `failed`).')


def define_flags(workdir_help: str) -> None:
  """--config (with --config.FIELD=VALUE overrides), --workdir and the multi-process flags."""
  config_flags.DEFINE_config_file(
      'config', None, 'A config by name (`demo`, `mixmae_swin_base_w14_600ep:runlocal`) or path '
      '(`configs/demo.py`); its fields are set with --config.FIELD=VALUE.', lock_config=True)
  flags.DEFINE_string('workdir', None, workdir_help)
  define_multiprocess_flags()
  flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: List[str], doc: str = '') -> List[str]:
  """absl's parsing of the command line, after `--help` (the command's own flags first) and
  configs found by name; a flag error is one `error:` line."""
  if command.wants_help(argv[1:]):
    sys.stdout.write(command.help_text(doc, [FLAGS[name] for name in OWN_FLAGS]))
    if '--helpfull' in argv:  # absl's own flags (logging) as well, after ours
      sys.stdout.write('\nAll flags:\n' + FLAGS.get_help(include_special_flags=False) + '\n')
    sys.exit(0)
  return command.parse_or_fail(FLAGS, argv)


def setup_logging() -> None:
  """This package's progress at INFO (shown on the console before any long wait: TFDS
  preparation, distributed start-up); libraries (Orbax logs every file it renames) at WARNING."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  if not logging.getLogger().handlers:  # outside absl's app.run (tests, notebooks)
    logging.basicConfig(format='%(levelname).1s %(name)s] %(message)s')


def main_running(run: Callable[..., object]) -> Callable[[list], None]:
  """An absl `main` that joins the processes, calls `run(config, workdir)`, prints what the run
  left where, and exits with the run's exit code."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]} (config fields are set as '
                           f'--config.FIELD=VALUE)')
    setup_logging()
    started = time.perf_counter()
    try:
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             FLAGS.initialization_timeout, FLAGS.peer_timeout)
      results = run(FLAGS.config, FLAGS.workdir)
      peer_watch.stop()
    except Preempted as e:
      peer_watch.stop()
      log.warning('%s', e)
      sys.exit(PREEMPTED_EXIT_CODE)
    except USER_ERRORS as e:
      sys.stderr.write(error_line(e, FLAGS.workdir) + '\n')
      sys.exit(FAILED_EXIT_CODE)
    except ModuleNotFoundError as e:
      command.fail_if_missing_extra(e)
      raise
    if jax.process_index() == 0:
      print(run_summary.text(FLAGS.workdir, results, time.perf_counter() - started), flush=True)
  return main


def run_cli(run: Callable[..., object], workdir_help: str, doc: str = '',
            tensorflow: bool = False) -> None:
  """Define the flags and run `run(config, workdir)` as a command; `doc` is its --help;
  `tensorflow`: the command reads data, so TensorFlow is loaded quietly first."""
  startup.quiet(tensorflow)
  define_flags(workdir_help)
  app.run(main_running(run), flags_parser=lambda argv: parse_flags(argv, doc))
