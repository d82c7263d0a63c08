"""What the command-line entry points share: their flags and how a process starts.

`mixmae_jax.train` and `mixmae_jax.finetune` take the same flags (`--config`, `--workdir`, the
multi-process trio) and start the same way; each only names the function it runs.
"""
import logging
from typing import Callable

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mixmae_jax.training import distributed

FLAGS = flags.FLAGS


def define_flags(workdir_help: str) -> None:
  """--config (with --config.FIELD=VALUE overrides), --workdir and the multi-process flags."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, workdir_help)
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for multi-process runs outside TPU pods.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
  flags.mark_flags_as_required(['config', 'workdir'])


def main_running(run: Callable[..., object]) -> Callable[[list], None]:
  """An absl `main` that joins the processes and calls `run(config, workdir)`."""
  def main(argv):
    if len(argv) > 1:
      raise ValueError(f'unexpected arguments: {argv[1:]} (config fields are set as '
                       f'--config.FIELD=VALUE)')
    # Our progress at INFO; libraries (Orbax logs every file it renames) at WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger('mixmae_jax').setLevel(logging.INFO)
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    run(FLAGS.config, FLAGS.workdir)
  return main
