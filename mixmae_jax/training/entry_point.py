"""What the command-line entry points share: their flags, how a process starts and how it ends.

`mixmae_jax.train` and `mixmae_jax.finetune` take the same flags (`--config`, `--workdir`, the
multi-process flags) and start the same way; each only names the function it runs. A mistyped
config field is one line naming the field (and the field it probably meant); the errors a user
can act on (an impossible config, a workdir in use or unwritable, unreadable checkpoints, another
architecture, a non-finite step, a bad multi-process setup) are one message without a traceback.
Exit codes: 0 finished, 75 preempted (rerun to resume), 1 failed (see `workdir.py`).
"""
import datetime
import difflib
import importlib.util
import logging
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mixmae_jax.data import DataError
from mixmae_jax.training import distributed, peer_watch
from mixmae_jax.training.architecture_match import ArchitectureMismatch
from mixmae_jax.training.checkpointing import CheckpointError
from mixmae_jax.training.config_checks import ConfigError
from mixmae_jax.training.run_control import NonFiniteLoss, Preempted
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
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, workdir_help)
  define_multiprocess_flags()
  flags.mark_flags_as_required(['config', 'workdir'])


def load_config_file(spec: str):
  """`path/to/config.py[:arg]` -> its `get_config(arg)`, as `--config` reads it."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('mixmae_jax_config_file', path)
  if module_spec is None:
    raise FileNotFoundError(f'no config file at {path}')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _field_paths(node, prefix: str = '') -> List[str]:
  out = []
  for key, value in node.items():
    out.append(prefix + key)
    if hasattr(value, 'items'):
      out += _field_paths(value, prefix + key + '.')
  return out


def unknown_field_message(argv: Sequence[str], flag_name: str = 'config') -> Optional[str]:
  """One line for the first `--config.FIELD=VALUE` naming no field, with the likely field."""
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith(f'--{flag_name}=')), None)
  if spec is None:
    return None
  try:
    paths = _field_paths(load_config_file(spec))
  except Exception:  # pylint: disable=broad-except  (the config flag reports its own errors)
    return None
  for arg in argv:
    if not arg.startswith(f'--{flag_name}.'):
      continue
    field = arg[len(flag_name) + 3:].split('=', 1)[0]
    if field in paths:
      continue
    leaf = field.rsplit('.', 1)[-1]
    guesses = [p for p in paths if p.rsplit('.', 1)[-1] == leaf] or \
        difflib.get_close_matches(field, paths, n=3)
    hint = f' Did you mean {" or ".join(guesses[:3])}?' if guesses else ''
    return f'{arg.split("=", 1)[0]}: the config in {spec} has no field {field!r}.{hint}'
  return None


def parse_flags(argv: List[str]) -> List[str]:
  """absl's parsing, with ml_collections' errors for an unknown field made one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (AttributeError, KeyError) as e:  # ml_collections looking up an unknown field
    message = unknown_field_message(argv) or f'{type(e).__name__}: {e}'
  sys.stderr.write(f'FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to '
                   f'see help on flags.\n')
  sys.exit(1)


def setup_logging() -> None:
  """This package's progress at INFO (shown on the console before any long wait: TFDS
  preparation, distributed start-up); libraries (Orbax logs every file it renames) at WARNING."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  if not logging.getLogger().handlers:  # outside absl's app.run (tests, notebooks)
    logging.basicConfig(format='%(levelname).1s %(name)s] %(message)s')


def main_running(run: Callable[..., object]) -> Callable[[list], None]:
  """An absl `main` that joins the processes, calls `run(config, workdir)` and exits with the
  run's exit code."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]} (config fields are set as '
                           f'--config.FIELD=VALUE)')
    setup_logging()
    try:
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             FLAGS.initialization_timeout, FLAGS.peer_timeout)
      run(FLAGS.config, FLAGS.workdir)
      peer_watch.stop()
    except Preempted as e:
      peer_watch.stop()
      log.warning('%s', e)
      sys.exit(PREEMPTED_EXIT_CODE)
    except USER_ERRORS as e:
      sys.stderr.write(error_line(e, FLAGS.workdir) + '\n')
      sys.exit(FAILED_EXIT_CODE)
  return main


def run_cli(run: Callable[..., object], workdir_help: str) -> None:
  """Define the flags and run `run(config, workdir)` as a command."""
  define_flags(workdir_help)
  app.run(main_running(run), flags_parser=parse_flags)
