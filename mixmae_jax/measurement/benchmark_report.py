"""The benchmark's figures as lines a person reads: one run (`report`), a TPU compile
(`tpu_report`) and several runs side by side (`side_by_side`). The JSON line beside them is the
record; these are derived from it alone."""
from typing import Any, Dict, List, Optional

from mixmae_jax.measurement import machine


def gib(n: Optional[float], missing: str = 'n/a', unit: str = ' GiB') -> str:
  """`n` bytes in GiB with two decimals (`missing` for None)."""
  return missing if n is None else f'{n / 2**30:.2f}{unit}'


def percent(x: Optional[float]) -> str:
  return 'n/a' if x is None else f'{100 * x:.1f}%'


def report(f: Dict[str, Any]) -> List[str]:
  """Human-readable lines for the figures (the JSON line follows them)."""
  xla = 'n/a' if f['xla_flops_per_image'] is None else f'{f["xla_flops_per_image"] / 1e9:.1f} G'
  fwd = f['analytic_forward_flops_per_image']
  plan = f['compiled_memory_bytes'] or {}
  peak = ('no peak known: pass --peak_tflops' if f['peak_tflops'] is None else
          f'{percent(f["mfu"])} of {f["peak_tflops"]:g} TFLOP/s (XLA count: '
          f'{percent(f["mfu_xla"])})')
  lines = [
      f'{f["devices"]} x {f["device_kind"]} ({f["platform"]}), jax {f["jax_version"]}, '
      f'{f["compute_dtype"]}, attention={f["attention"]} scan_blocks={f["scan_blocks"]} '
      f'remat={f["remat"]}',
      machine.describe_line(f['cpu']),
      f'{f["image_size"]} px, {f["per_device_batch"]} images per device, {f["global_batch"]} '
      f'per step',
      f'compile: {f["compile_seconds"]:.1f} s ({f["lowering_seconds"]:.1f} s tracing; '
      f'{f["compile_cpu_seconds"]:.1f} CPU seconds)',
      f'step: median {f["median_step_seconds"] * 1e3:.1f} ms (dispatched back to back: '
      f'{f["pipelined_step_seconds"] * 1e3:.1f} ms), {f["images_per_sec"]:.1f} images/s, '
      f'{f["images_per_sec_per_device"]:.1f} per device; {f["median_step_cpu_seconds"]:.2f} '
      f'CPU seconds per step',
      f'FLOPs per image: analytic {f["analytic_flops_per_image"] / 1e9:.1f} G (3 x (encoder '
      f'{fwd["encoder_forward"] / 1e9:.1f} G + decoder {fwd["decoder_forward"] / 1e9:.1f} G)), '
      f'XLA {xla}',
      f'model: {f["model_tflops_per_sec_per_device"]:.2f} TFLOP/s per device; MFU {peak}',
      f'memory: peak in use {gib(f["peak_memory_bytes"])}; compiled plan: arguments '
      f'{gib(plan.get("argument"))}, temporaries {gib(plan.get("temp"))}, outputs '
      f'{gib(plan.get("output"))}',
  ]
  if 'max_per_device_batch' in f:
    lines.append(f'largest per-device batch that fits: {f["max_per_device_batch"]}')
  return lines + census_lines(f)


def census_lines(f: Dict[str, Any]) -> List[str]:
  """The compiled step's operations by kind (`--hlo_census`), or nothing."""
  census = f.get('hlo_census')
  if not census:
    return []
  return ['operations that run, by kind (count, bytes written): ' + '; '.join(
      f'{kind.replace("_", " ")} {c["count"]} ({gib(c["bytes"])})'
      for kind, c in census.items())]


def ratio(value: Optional[float], first: Optional[float]) -> str:
  return 'n/a' if not value or not first else f'{value / first:.2f}x'


def side_by_side(runs: List[Dict[str, Any]]) -> List[str]:
  """A table of several runs, each figure as a ratio to the first run's (memory: the compiled
  plan's temporaries, and the peak in use where the device reports one)."""
  first = runs[0]
  plan = lambda f: (f['compiled_memory_bytes'] or {}).get('temp')  # noqa: E731
  cpu = lambda f: f['median_step_cpu_seconds']  # noqa: E731
  lines = ['| config | objective / encoder | GFLOPs per image | images/s | CPU s per step | '
           'temporaries | peak in use | vs first: images/s, CPU s, FLOPs, temporaries, peak |',
           '|---|---|---|---|---|---|---|---|']
  for f in runs:
    lines.append(
        f'| {f["config"]} | {f["objective"]} / {f["encoder"]} | '
        f'{f["analytic_flops_per_image"] / 1e9:.1f} | {f["images_per_sec"]:.2f} | '
        f'{cpu(f):.2f} | {gib(plan(f))} | {gib(f["peak_memory_bytes"])} | '
        f'{f["images_per_sec"] / first["images_per_sec"]:.2f}x, {ratio(cpu(f), cpu(first))}, '
        f'{f["analytic_flops_per_image"] / first["analytic_flops_per_image"]:.2f}x, '
        f'{ratio(plan(f), plan(first))}, '
        f'{ratio(f["peak_memory_bytes"], first["peak_memory_bytes"])} |')
  return lines


def tpu_report(f: Dict[str, Any]) -> List[str]:
  plan, hbm = f['memory_plan'], f['hbm_bytes']
  lines = [
      f'{f["devices"]} x {f["device_kind"]} ({f["tpu_topology"]}, compiled here, nothing run), '
      f'jax {f["jax_version"]}, {f["compute_dtype"]}, {f["state_sharding"]} state, '
      f'attention={f["attention"]} scan_blocks={f["scan_blocks"]} remat={f["remat"]}',
      f'{f["image_size"]} px, {f["per_device_batch"]} images per device',
      f'compile: {f["compile_seconds"]:.1f} s ({f["compile_cpu_seconds"]:.1f} CPU seconds)',
  ]
  if plan is None:
    lines.append(f'does not fit: the compiler ran out of HBM ({gib(hbm)} per device)')
  else:
    lines.append(f'memory per device: arguments {gib(plan["argument"])} (state and batch), '
                 f'temporaries {gib(plan["temp"])}, outputs {gib(plan["output"])} (of which '
                 f'donated {gib(plan["alias"])}), total {gib(plan["total"])} of '
                 f'{gib(hbm)} HBM')
    xla = f['xla_flops_per_image']
    lines.append(f'FLOPs per image: analytic {f["analytic_flops_per_image"] / 1e9:.1f} G, XLA '
                 f'{"n/a" if xla is None else f"{xla / 1e9:.1f} G"} (loop bodies count once)')
  if 'max_per_device_batch' in f:
    lines.append(f'largest per-device batch that fits: {f["max_per_device_batch"]} (tried '
                 f'{", ".join(f"{b}: {gib(t)}" for b, t in f["batches_tried"].items())})')
  return lines + census_lines(f)
