"""How long a checkpoint save holds up the training loop, with and without background saving.

  python -m mixmae_jax.measurement.save_stall_benchmark \
      --config=configs/mixmae_swin_base_w14_600ep.py:runlocal [--config.FIELD=VALUE ...] \
      [--steps 12] [--save_every 3] [--workdir DIR]

Runs the real step and the real `TrainingLoop.save` on random images, once with
`save_in_background=False` (the loop copies the state to the host, checksums it and hands it to
Orbax before the next step) and once with True (the state is copied on its devices and written
from a thread), alternating the two so that both see the same machine. For each it prints the
median wall time of a step that follows a save and of one that does not; the difference is what
a save costs the loop. The last line is JSON.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

import jax
from absl import flags
from ml_collections import config_flags

from mixmae_jax.cli import command
from mixmae_jax.measurement import benchmark
from mixmae_jax.training import checkpointing, config_checks, pretraining
from mixmae_jax.training.loop import TrainingLoop
from mixmae_jax.training.run_control import RunPlan


def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file, optionally with :arg',
                                  flag_values=fv, lock_config=False, sys_argv=list(argv))
  flags.DEFINE_integer('steps', 12, 'steps per mode', flag_values=fv)
  flags.DEFINE_integer('save_every', 3, 'save after every this many steps', flag_values=fv)
  flags.DEFINE_integer('rounds', 2, 'alternations of the two modes', flag_values=fv)
  flags.DEFINE_string('workdir', '', 'where checkpoints go (default: a temporary directory)',
                      flag_values=fv)
  _, rest = command.parse(__doc__, fv, list(argv)[1:], 'save_stall_benchmark')
  if fv.config is None:
    command.fail('--config is required: a config name or file, e.g. '
                 'mixmae_swin_base_w14_600ep:runlocal (see --help)')
  if rest:
    command.fail(f'unexpected arguments {rest} (see --help)')
  return fv


def time_mode(config, setup: benchmark.Setup, state, workdir: str, background: bool,
              steps: int, save_every: int):
  """(wall seconds of each step, split by whether a save came right before it; the state
  after the steps, since the step donates the one it is given)."""
  config.save_in_background = background
  plan = RunPlan(1, 1, steps, 0, config.batch_size, 0.0)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'background' if background
                                                 else 'foreground'), keep=2)
  loop = TrainingLoop(config, workdir, plan, ckpt, {'benchmark': True}, layout=setup.layout)
  after_save, plain = [], []
  saved_last = False
  try:
    for step in range(1, steps + 1):
      started = time.perf_counter()
      if saved_last:  # the save's own time on the loop thread counts against this step
        loop.save(ckpt, state, step - 1)
      state, _ = setup.step(state, setup.batch, setup.rng)
      jax.block_until_ready(state)
      (after_save if saved_last else plain).append(time.perf_counter() - started)
      saved_last = step % save_every == 0
    ckpt.wait()
  finally:
    ckpt.close()
  return {'after_save': after_save, 'plain': plain}, state


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  args = parse_flags(['save_stall_benchmark'] + list(sys.argv[1:] if argv is None else argv))
  config = args.config
  _, arch = config_checks.pretraining_arch(config)
  config_checks.validate(config, global_devices=jax.device_count(),
                         process_count=jax.process_count())
  dtype = config_checks.resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  setup = benchmark.build(config, arch, pretraining.training_options(config), dtype,
                          config.batch_size // jax.device_count())
  state = setup.state
  workdir = args.workdir or tempfile.mkdtemp(prefix='save_stall_')
  times = {False: {'after_save': [], 'plain': []}, True: {'after_save': [], 'plain': []}}
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(setup.host_state))
  for _ in range(args.rounds):
    for background in (False, True):
      got, state = time_mode(config, setup, state, workdir, background, args.steps,
                             args.save_every)
      for key, values in got.items():
        times[background][key].extend(values[1:] if key == 'plain' else values)  # 1st may compile
  figures = {'config': config_flags.get_config_filename(args['config']),
             'device_kind': jax.local_devices()[0].device_kind, 'devices': jax.device_count(),
             'state_bytes': state_bytes}
  for background, name in ((False, 'foreground'), (True, 'background')):
    after, plain = (statistics.median(times[background][k]) for k in ('after_save', 'plain'))
    figures[name] = {'step_seconds': plain, 'step_after_save_seconds': after,
                     'save_stall_seconds': after - plain}
    print(f'{name:10s} save: step {plain:.3f} s, step with a save {after:.3f} s, '
          f'stall {after - plain:+.3f} s')
  print(f'state {state_bytes / 2**30:.2f} GiB on {figures["devices"]} x '
        f'{figures["device_kind"]}')
  print(json.dumps(figures), flush=True)
  return figures


if __name__ == '__main__':
  command.run_main(main)
