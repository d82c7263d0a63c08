"""Pretrain (or resume) a MixMAE model: parse flags, join the processes, run the loop.

  python -m mixmae_jax.train --config=configs/demo.py --workdir=/tmp/demo \
      [--config.FIELD=VALUE ...] [--coordinator_address=HOST:PORT --num_processes=N \
      --process_id=I]

The same command resumes from the newest checkpoint in --workdir.
"""
import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mixmae_jax import distributed, train_loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and pictures.')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for multi-process runs outside TPU pods.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Our progress at INFO; libraries (Orbax logs every file it renames) at WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  train_loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
