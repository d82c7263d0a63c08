"""How fast the real pretraining train step of any objective runs on this machine's devices.

  python -m mixmae_jax.measurement.benchmark --config=configs/NAME.py[:arg] \
      [--compare_config=configs/OTHER.py ...] [--batch_size N] [--steps N] [--warmup_steps N] \
      [--peak_tflops T] [--find_max_batch] [--config.FIELD=VALUE ...]

Builds the train step exactly as training does (`make_train_step`, pmapped with donation by
`parallel.data_parallel`) on synthetic uint8 images already on the devices, compiles it ahead of
time and times it. Prints compile seconds, the median step time, images/s (global and per
device), model FLOPs per image (analytic, the objective's `flops_per_image`, and XLA's count),
MFU against the device's peak, and peak device memory. `--batch_size` is per device (default:
the config's batch split over the devices). `--find_max_batch` also searches for the largest
per-device batch that runs (accelerators only: a CPU has no memory limit to find).

Flags are those of `mixmae_jax.train`: `--config` and `--config.FIELD=VALUE` (ml_collections
config flags). Each `--compare_config` is measured after `--config` in the same process and set
side by side (two objectives, or two encoder sizes), with the same `--config.FIELD=VALUE`
overrides. The last line is a JSON object: the figures of a single config, or {"runs": [...]}
for several.

Imports no TensorFlow: it runs on machines with JAX alone (the config files need ml_collections).
"""
import dataclasses
import gc
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from mixmae_jax import architectures
from mixmae_jax.cli import command, config_files
from mixmae_jax.measurement import (benchmark_report, device_memory, hlo_census, machine,
                                    tpu_targets)
from mixmae_jax.networks import block_scan
from mixmae_jax.networks.compute_options import ComputeOptions
from mixmae_jax.training import config_checks, pretraining
from mixmae_jax.training.optimizer import scaled_learning_rate, warmup_cosine_schedule
from mixmae_jax.training.train_step import TrainState

def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  """The benchmark's flags from `argv` (program name first), in the trainer's dialect.

  `--config` and `--config.FIELD=VALUE` are ml_collections config flags, as for
  `mixmae_jax.train`; each `--compare_config` is loaded the same way and gets the same overrides.
  A flag error, a config not found or a mistyped field is one `error:` line.
  """
  argv = list(argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file, optionally with :arg',
                                  flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_multi_string('compare_config', [], 'further config files to measure after '
                            '--config and set side by side (the same overrides apply)',
                            flag_values=fv)
  flags.DEFINE_integer('batch_size', 0, 'images per device per step (default: the config\'s, '
                       'split)', flag_values=fv)
  flags.DEFINE_integer('steps', 10, 'steps timed', flag_values=fv)
  flags.DEFINE_integer('warmup_steps', 2, 'steps run before timing', flag_values=fv)
  flags.DEFINE_float('peak_tflops', 0.0, 'device peak for MFU (default: the table for known '
                     'devices)', flag_values=fv)
  flags.DEFINE_bool('find_max_batch', False, 'also search for the largest per-device batch that '
                    'fits', flag_values=fv)
  flags.DEFINE_integer('max_batch_limit', 4096, 'the largest per-device batch --find_max_batch '
                       'tries', flag_values=fv)
  flags.DEFINE_float('search_bytes_per_image', 0.0, 'with --tpu_topology --find_max_batch: '
                     'bytes each added image costs (measured on another chip), which places '
                     'the second compile', flag_values=fv)
  flags.DEFINE_bool('skip_xla_flops', False, 'do not lower the reference step for XLA\'s FLOP '
                    'count', flag_values=fv)
  flags.DEFINE_string('profile_dir', '', 'also trace one step into this directory (TensorBoard '
                      'profile; summarise it with measurement.profile_summary)', flag_values=fv)
  flags.DEFINE_bool('hlo_census', False, 'also count the compiled step\'s operations by kind '
                    '(matmul, data movement, ...; measurement.hlo_census)', flag_values=fv)
  flags.DEFINE_string('tpu_topology', '', 'compile (not run) for a TPU slice, e.g. v5e:2x2 or '
                      'v4:2x2x1 (needs libtpu: pip install -e .[tpu])', flag_values=fv)
  _, rest = command.parse(__doc__, fv, argv[1:], argv[0], ('config', 'compare_config'))
  if fv.config is None:
    command.fail('--config is required: a config name or file, e.g. '
                 'mixmae_swin_base_w14_600ep:runlocal (see --help)')
  if rest:
    command.fail(f'unexpected arguments {rest}: config fields are set as --config.FIELD=VALUE')
  return fv


def configs_to_run(fv: flags.FlagValues) -> List[Tuple[str, Any]]:
  """(spec, config) of `--config` and of each `--compare_config`, with the same overrides."""
  overrides = config_flags.get_override_values(fv['config'])
  runs = [(config_flags.get_config_filename(fv['config']), fv.config)]
  for spec in fv.compare_config:
    config = config_files.load(spec)
    for path, value in overrides.items():
      *parents, leaf = path.split('.')
      node = config
      for name in parents:
        node = node[name]
      if leaf not in node:
        command.fail(f'--config.{path} does not apply to --compare_config={spec}: it has no '
                     f'field {path!r}')
      node[leaf] = value
    runs.append((spec, config))
  return runs


@dataclasses.dataclass
class Setup:
  """A compiled-ready step and its inputs, all on the devices."""
  step: Callable
  state: TrainState
  batch: Dict[str, jax.Array]
  rng: jax.Array
  host_state: TrainState  # the fresh state on the host, to build other variants from
  layout: Any  # parallel.ReplicatedLayout or ShardedLayout, as `state_sharding` says


def step_setup(config, arch, options: ComputeOptions, dtype,
               devices: Optional[Sequence] = None) -> pretraining.StepSetup:
  """The train step of `config` with `options`, exactly as pretraining builds it (its layout
  over `devices`, default all)."""
  objective = config_checks.pretraining_arch(config)[0]
  model = architectures.build_model(arch, dtype, options)
  peak_lr = scaled_learning_rate(config.base_lr, config.batch_size)
  schedule = warmup_cosine_schedule(peak_lr, 10, 1000, config.min_lr)
  return pretraining.step_setup(config, objective, arch, model, schedule, devices)


def build(config, arch, options: ComputeOptions, dtype,
          per_device: int, host_state: Optional[TrainState] = None) -> Setup:
  """The wrapped train step of `config` with `options`, fresh state and a synthetic batch."""
  setup = step_setup(config, arch, options, dtype)
  if host_state is None:  # the params are the same under every option: built once
    host_state = jax.device_get(jax.jit(setup.init)())
  else:  # in the layout of these options (a scanned step may hold its stages stacked)
    stages = block_scan.scanned_stages(setup.abstract_state.params)
    host_state = host_state.replace(params=block_scan.relayout(host_state.params, stages),
                                    opt_state=block_scan.relayout(host_state.opt_state, stages))
  layout, size = setup.layout, arch.encoder.img_size
  images = np.random.default_rng(0).integers(
      0, 256, (per_device * jax.local_device_count(), size, size, 3), dtype=np.uint8)
  return Setup(layout.wrap(setup.train_step), layout.place_state(host_state),
               layout.place_batch({'image': images}),
               layout.place_rng(jax.random.PRNGKey(config.seed)), host_state, layout)


def compile_step(setup: Setup) -> Tuple[Any, float, float, float]:
  """(compiled step, seconds tracing and lowering, seconds compiling, CPU seconds compiling).

  The CPU seconds are this process's, all threads: on a shared machine they vary less than the
  wall-clock seconds.
  """
  start, cpu_start = time.perf_counter(), time.process_time()
  lowered = setup.step.lower(setup.state, setup.batch, setup.rng)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return (compiled, lowered_at - start, time.perf_counter() - lowered_at,
          time.process_time() - cpu_start)


def time_steps(compiled, setup: Setup, warmup: int, steps: int,
               profile_dir: str = '') -> Dict[str, float]:
  """Median of `steps` steps each waited for, and the mean of `steps` dispatched back to back.

  The second is what the training loop sees, as it waits for the devices only at log steps; the
  gap between the two is the cost of a host synchronisation per step. The median CPU seconds of
  this process per step are the step's cost on a CPU backend even when other processes share
  the cores (on an accelerator they are the host's dispatch cost).
  """
  state, metrics = setup.state, None
  for _ in range(warmup):
    state, metrics = compiled(state, setup.batch, setup.rng)
  jax.block_until_ready(state)
  times, cpu_times = [], []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, setup.batch, setup.rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, setup.batch, setup.rng)
  jax.block_until_ready((state, metrics))
  pipelined = (time.perf_counter() - start) / steps
  if profile_dir:  # one more step, traced for TensorBoard (and `profile_summary`)
    with jax.profiler.trace(profile_dir):
      state, metrics = compiled(state, setup.batch, setup.rng)
      jax.block_until_ready((state, metrics))
  setup.state = state
  return {'median_step_seconds': statistics.median(times), 'pipelined_step_seconds': pipelined,
          'median_step_cpu_seconds': statistics.median(cpu_times),
          'loss': float(np.asarray(metrics['loss'])[0])}


def xla_flops_per_image(config, arch, dtype, per_device: int,
                        host_state: TrainState) -> Optional[float]:
  """XLA's FLOP count of the reference step (plain attention, unrolled, no remat), per image.

  XLA's cost analysis counts a loop body once and a cuDNN call not at all, so the step that runs
  may hide most of its FLOPs; the reference step computes the same function and hides none. It
  is only lowered, never compiled.
  """
  reference = ComputeOptions(attention='plain', scan_blocks=False, remat='none')
  setup = build(config, arch, reference, dtype, per_device, host_state)
  cost = setup.step.lower(setup.state, setup.batch, setup.rng).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) / per_device if cost and 'flops' in cost else None


def find_max_batch(config, arch, options, dtype, host_state, start: int, limit: int,
                   multiple: int = 1) -> int:
  """Largest per-device batch whose step compiles and runs without exhausting device memory;
  a multiple of the objective's batch multiple (which must divide 8)."""
  def fits(batch: int) -> bool:
    try:
      setup = build(config, arch, options, dtype, batch, host_state)
      compiled = compile_step(setup)[0]
      jax.block_until_ready(compiled(setup.state, setup.batch, setup.rng))
      return True
    except Exception as e:  # pylint: disable=broad-except
      if not device_memory.out_of_memory(e):
        raise
      return False
    finally:
      setup = compiled = None
      gc.collect()
  return device_memory.largest_batch(fits, start, limit,
                                    granule=8 if start >= 8 else max(2, multiple))


def per_device_batch(config, args, global_devices: int) -> Tuple[Any, Any, int]:
  """(objective module, architecture, per-device batch); the config is set to that batch on
  `global_devices` without accumulation, and validated."""
  objective, arch = config_checks.pretraining_arch(config)
  multiple = objective.batch_multiple(arch)[0]
  per_device = args.batch_size or max(2, config.batch_size // global_devices
                                      // config.grad_accum_steps)
  per_device = -(-per_device // multiple) * multiple
  config.batch_size, config.grad_accum_steps = per_device * global_devices, 1
  config_checks.validate(config, global_devices=global_devices,
                         process_count=jax.process_count())
  return objective, arch, per_device


def compile_for_tpu(config, args: flags.FlagValues, spec: str) -> Dict[str, Any]:
  """Compile the step for `args.tpu_topology` without a TPU: compile seconds, the per-chip
  memory plan against the chip's HBM, XLA's FLOPs, and with `--find_max_batch` the largest
  per-device batch the compiler fits on a chip."""
  devices = tpu_targets.topology_devices(args.tpu_topology)
  objective, arch, per_device = per_device_batch(config, args, len(devices))
  options = pretraining.training_options(config)
  dtype = config_checks.resolve_compute_dtype(config.compute_dtype, 'tpu')
  setup = step_setup(config, arch, options, dtype, devices)
  step, size = setup.layout.wrap(setup.train_step), arch.encoder.img_size
  rng = jax.ShapeDtypeStruct((2,), np.uint32)

  host = {}  # batch: this process's host memory once its compile is dropped, in compile order

  def compile_at(batch: int):
    images = jax.ShapeDtypeStruct((batch * len(devices), size, size, 3), np.uint8)
    return tpu_targets.compile_abstract(step, setup.layout.abstract_inputs(
        setup.abstract_state, {'image': images}, rng))

  compiled, seconds, cpu_seconds = compile_at(per_device)
  kind = devices[0].device_kind
  hbm = tpu_targets.hbm_bytes(kind)
  fits = not isinstance(compiled, Exception)
  if not fits and not device_memory.out_of_memory(compiled):
    raise compiled
  plan = tpu_targets.memory_plan(compiled) if fits else None
  census = hlo_census.census(compiled.as_text()) if fits and args.hlo_census else None
  xla = tpu_targets.flops(compiled) if fits else None
  figures = {
      'config': spec, 'objective': arch.objective, 'encoder': arch.encoder.name,
      'tpu_topology': args.tpu_topology, 'device_kind': kind, 'devices': len(devices),
      'cpu': machine.cpu_description(),
      'jax_version': jax.__version__, 'compute_dtype': np.dtype(dtype).name,
      **dataclasses.asdict(options), 'state_sharding': setup.layout.name,
      'image_size': size, 'per_device_batch': per_device, 'compile_seconds': seconds,
      'compile_cpu_seconds': cpu_seconds, 'hbm_bytes': hbm, 'memory_plan': plan,
      'fits': bool(fits and (hbm is None or plan['total'] <= hbm)),
      'xla_flops_per_image': None if xla is None else xla / per_device,
      'analytic_flops_per_image': objective.flops_per_image(arch)['train'],
      'hlo_census': census,
  }
  del compiled
  host[str(per_device)] = tpu_targets.release_compiles()
  if args.find_max_batch and hbm:
    def plan_at(batch):
      total = tpu_targets.planned_total(compile_at(batch)[0])
      host[str(batch)] = tpu_targets.release_compiles()
      return total
    multiple = objective.batch_multiple(arch)[0]
    figures['max_per_device_batch'], tried = tpu_targets.largest_batch(
        plan_at, hbm, per_device, args.max_batch_limit, granule=max(multiple, 8),
        known={per_device: plan['total'] if plan else None},
        bytes_per_image=args.search_bytes_per_image or None)
    figures['batches_tried'] = {str(k): v for k, v in sorted(tried.items())}
  figures['host_memory_after_compile'] = host
  return figures


def run(config, args: flags.FlagValues, spec: str) -> Dict[str, Any]:
  """Builds, compiles and times the step as `config` and `args` say; returns the figures."""
  if args.tpu_topology:
    return compile_for_tpu(config, args, spec)
  devices, global_devices = jax.local_device_count(), jax.device_count()
  objective, arch, per_device = per_device_batch(config, args, global_devices)
  multiple = objective.batch_multiple(arch)[0]
  options = pretraining.training_options(config)
  dtype = config_checks.resolve_compute_dtype(config.compute_dtype, jax.default_backend())
  setup = build(config, arch, options, dtype, per_device)
  host_state = setup.host_state
  compiled, lower_s, compile_s, compile_cpu_s = compile_step(setup)
  timing = time_steps(compiled, setup, args.warmup_steps, args.steps, args.profile_dir)
  memory = device_memory.memory_figures(compiled)
  census = hlo_census.census(compiled.as_text()) if args.hlo_census else None
  compiled = setup = None

  device = jax.local_devices()[0]
  analytic = objective.flops_per_image(arch)
  xla = None if args.skip_xla_flops else xla_flops_per_image(config, arch, dtype, per_device,
                                                             host_state)
  per_device_rate = per_device / timing['median_step_seconds']
  peak = args.peak_tflops or machine.peak_tflops(device.device_kind)
  mfu = lambda flops: None if not (peak and flops) else flops * per_device_rate / (peak * 1e12)  # noqa: E731
  figures = {
      'config': spec, 'objective': arch.objective, 'encoder': arch.encoder.name,
      'device_kind': device.device_kind, 'platform': device.platform,
      'cpu': machine.cpu_description(),
      'devices': devices, 'global_devices': global_devices, 'jax_version': jax.__version__,
      'compute_dtype': np.dtype(dtype).name, **dataclasses.asdict(options),
      'state_sharding': config.get('state_sharding', 'replicated'),
      'image_size': arch.encoder.img_size, 'per_device_batch': per_device,
      'global_batch': per_device * global_devices, 'steps': args.steps,
      'lowering_seconds': lower_s, 'compile_seconds': lower_s + compile_s,
      'compile_cpu_seconds': compile_cpu_s, **timing,
      'images_per_sec': per_device_rate * global_devices,
      'images_per_sec_per_device': per_device_rate,
      'analytic_flops_per_image': analytic['train'],
      'analytic_forward_flops_per_image': {k: analytic[k] for k in
                                           ('encoder_forward', 'decoder_forward')},
      'xla_flops_per_image': xla, 'model_tflops_per_sec_per_device':
          analytic['train'] * per_device_rate / 1e12,
      'peak_tflops': peak, 'mfu': mfu(analytic['train']), 'mfu_xla': mfu(xla), **memory,
      'hlo_census': census,
  }
  if args.find_max_batch:
    figures['max_per_device_batch'] = find_max_batch(config, arch, options, dtype, host_state,
                                                     per_device, args.max_batch_limit, multiple)
  return figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Measure `--config` (and each `--compare_config`); `argv` excludes the program name."""
  args = parse_flags(['benchmark'] + list(sys.argv[1:] if argv is None else argv))
  runs = []
  for spec, config in configs_to_run(args):
    config = config.copy_and_resolve_references()  # unlocked: `run` sets the batch fields
    figures = run(config, args, spec)
    print(f'== {spec}')
    describe = benchmark_report.tpu_report if args.tpu_topology else benchmark_report.report
    for line in describe(figures):
      print(line)
    runs.append(figures)
  if len(runs) > 1 and not args.tpu_topology:
    print('\n'.join(benchmark_report.side_by_side(runs)))
  result = runs[0] if len(runs) == 1 else {'runs': runs}
  print(json.dumps(result), flush=True)
  return result


if __name__ == '__main__':
  command.run_main(main)
