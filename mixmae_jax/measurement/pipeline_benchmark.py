"""How many training images per second the input pipeline makes on this host's CPUs.

  mixmae-pipeline-benchmark [--config=NAME] [--config.data.FIELD=VALUE ...]
      [--image_folder=DIR] [--image_size=224] [--batch_size=128] [--num_batches=20]
      [--threads=N] [--no_fused_decode]

Builds the real `PretrainingInput` (decode, RandomResizedCrop, flip, batch of uint8) on a
folder of images (`--image_folder`, e.g. ImageNet's validation JPEGs; default: the config's,
else the demo images shipped with the package), and times `num_batches` batches after a warm-up,
in wall-clock and in the CPU seconds the process used (the latter holds on a machine shared with
other jobs). `--threads N` runs TensorFlow and
tf.data on N threads so the per-core figure means something; without it every core is used.
Flags are in the trainer's dialect: with `--config`, the pipeline is the config's (its `data`
fields and input size, `--config.FIELD=VALUE` overrides); `--image_folder`, `--image_size` and
`--no_fused_decode` override it. The last line printed is a JSON object with the figures.
"""
import json
import sys
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image

from mixmae_jax.cli import command



def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  """The flags from `argv` (program name first); see the module docstring."""
  argv = list(argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'a config whose data fields and input size '
                                  'to use (optional)', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string('image_folder', '', 'images to read (default: the config\'s, else the '
                      'demo images shipped with the package)', flag_values=fv)
  flags.DEFINE_integer('image_size', 0, 'crop size (default: the config\'s, else 224)',
                       flag_values=fv)
  flags.DEFINE_integer('batch_size', 128, 'images per batch', flag_values=fv)
  flags.DEFINE_integer('num_batches', 20, 'batches timed', flag_values=fv)
  flags.DEFINE_integer('warmup_batches', 3, 'batches read before timing (fills the prefetch '
                       'buffers)', flag_values=fv)
  flags.DEFINE_integer('threads', 0, 'threads for TF and tf.data (0: all cores)',
                       flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'stream seed', flag_values=fv)
  flags.DEFINE_bool('no_fused_decode', False, 'decode whole JPEGs, then crop (to measure what '
                    'fusing saves)', flag_values=fv)
  flags.DEFINE_bool('dct_scaled_decode', False, 'decode large JPEG crops at reduced DCT scale',
                    flag_values=fv)
  flags.DEFINE_string('resize_method', '', 'bicubic or bilinear (default: the config\'s)',
                      flag_values=fv)
  flags.DEFINE_bool('compare', False, 'time today\'s decode and each cheaper variant (DCT '
                    'scaling, bilinear, both) alternately, and give each one\'s pixel '
                    'difference from today\'s', flag_values=fv)
  flags.DEFINE_integer('rounds', 3, 'alternations with --compare', flag_values=fv)
  _, rest = command.parse(__doc__, fv, argv[1:], argv[0])
  if rest:
    command.fail(f'unexpected arguments {rest} (see --help)')
  return fv


def pipeline_settings(args: flags.FlagValues):
  """(data config, image size) from `--config` (or the defaults) and the plain flags."""
  from mixmae_jax.training.config_defaults import data_fields  # pylint: disable=g-import-not-at-top
  data = args.config.data.copy_and_resolve_references() if args.config else data_fields()
  size = args.image_size or (args.config.model.encoder.img_size if args.config else 224)
  if args.image_folder or not args.config:  # a config's own source ('' = the demo images)
    data.image_folder = args.image_folder  # '' = the demo images
  if args.no_fused_decode:
    data.fused_jpeg_decode = False
  if args.dct_scaled_decode:
    data.dct_scaled_decode = True
  if args.resize_method:
    data.resize_method = args.resize_method
  return data, size


def mean_pixels(files: List[str]) -> float:
  """Mean width x height of the source images, read from their headers only."""
  sizes = []
  for path in files:
    try:
      with Image.open(path) as image:
        sizes.append(image.size[0] * image.size[1])
    except (OSError, ValueError):  # undecodable files are skipped by the pipeline too
      continue
  return float(np.mean(sizes)) if sizes else 0.0


def _set_threads(threads: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if threads:  # must precede the first TF op; tf.data's own pool is capped per pipeline anyway
    try:
      tf.config.threading.set_intra_op_parallelism_threads(threads)
      tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process (e.g. under pytest)
      pass


def time_pipeline(data, image_size: int, args: flags.FlagValues):
  """(figures, the first timed batch) of the pipeline `data` describes."""
  from mixmae_jax.data import pretraining as input_pipeline  # pylint: disable=g-import-not-at-top
  source = input_pipeline.open_source(data)
  pipeline = input_pipeline.PretrainingInput(
      data, image_size=image_size, per_host_batch=args.batch_size, seed=args.seed,
      threads=args.threads or None)
  for _ in range(args.warmup_batches):
    next(pipeline)
  start, cpu_start = time.perf_counter(), time.process_time()
  first = next(pipeline)
  for _ in range(args.num_batches - 1):
    next(pipeline)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
  cores = args.threads or os.cpu_count() or 1
  images = args.num_batches * args.batch_size
  images_per_sec = images / seconds
  return {
      'images_per_sec': round(images_per_sec, 1),
      'images_per_sec_per_core': round(images_per_sec / cores, 1),
      # What the process's threads spent, whatever else shares the machine: the per-core
      # figure that does not depend on other jobs (prefetching threads included).
      'cpu_seconds': round(cpu_seconds, 3),
      'images_per_cpu_second': round(images / cpu_seconds, 1),
      'cores': cores,
      'batch_size': args.batch_size,
      'image_size': image_size,
      'num_batches': args.num_batches,
      'seconds': round(seconds, 3),
      'source': data.image_folder or data.tfds_name or input_pipeline.DEMO_IMAGES,
      'source_images': source.size,
      'mean_source_pixels': round(mean_pixels(getattr(source, 'files', []))),
      'skipped': pipeline.skipped,
      'fused_jpeg_decode': bool(data.fused_jpeg_decode),
      'dct_scaled_decode': bool(data.get('dct_scaled_decode', False)),
      'resize_method': data.get('resize_method', 'bicubic'),
  }, first


def run(args: flags.FlagValues) -> Dict[str, object]:
  """Times the pipeline as `args` say; returns the figures."""
  _set_threads(args.threads)
  data, image_size = pipeline_settings(args)
  return time_pipeline(data, image_size, args)[0]


VARIANTS = (('today', {}), ('dct_scaled', {'dct_scaled_decode': True}),
            ('bilinear', {'resize_method': 'bilinear'}),
            ('dct_scaled+bilinear', {'dct_scaled_decode': True, 'resize_method': 'bilinear'}))


def compare(args: flags.FlagValues) -> Dict[str, object]:
  """Each of VARIANTS timed `args.rounds` times, alternating; the median images per CPU second,
  its ratio to today's decode, and the mean / max absolute pixel difference of the same crops."""
  _set_threads(args.threads)
  base, image_size = pipeline_settings(args)
  rates = {name: [] for name, _ in VARIANTS}
  batches = {}
  for _ in range(args.rounds):
    for name, fields in VARIANTS:
      data = base.copy_and_resolve_references()
      data.update(fields)
      figures, first = time_pipeline(data, image_size, args)
      rates[name].append(figures['images_per_cpu_second'])
      batches.setdefault(name, first['image'].astype(np.int16))
  out = {'source': figures['source'], 'mean_source_pixels': figures['mean_source_pixels'],
         'image_size': image_size, 'threads': args.threads, 'variants': {}}
  today = float(np.median(rates['today']))
  for name, _ in VARIANTS:
    rate = float(np.median(rates[name]))
    diff = np.abs(batches[name] - batches['today'])
    out['variants'][name] = {'images_per_cpu_second': rate, 'ratio': rate / today,
                             'runs': rates[name], 'mean_abs_diff': float(diff.mean()),
                             'max_abs_diff': int(diff.max())}
  return out


def main(argv: Optional[Sequence[str]] = None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  args = parse_flags(['pipeline_benchmark'] + list(sys.argv[1:] if argv is None else argv))
  if args.compare:
    figures = compare(args)
    print(f'source: {figures["source"]} (mean {figures["mean_source_pixels"]} pixels), '
          f'{figures["image_size"]} px, images per CPU second (median of the runs)')
    for name, f in figures['variants'].items():
      print(f'{name:20s} {f["images_per_cpu_second"]:7.1f} ({f["ratio"]:.2f}x)  pixel '
            f'difference from today: mean {f["mean_abs_diff"]:.2f}, max {f["max_abs_diff"]}')
    print(json.dumps(figures), flush=True)
    return
  figures = run(args)
  print(f'source: {figures["source"]} ({figures["source_images"]} images, mean '
        f'{figures["mean_source_pixels"]} pixels)')
  print(f'{figures["images_per_sec"]:.1f} images/s at {figures["image_size"]}px on '
        f'{figures["cores"]} cores: {figures["images_per_sec_per_core"]:.1f} images/s per core; '
        f'{figures["images_per_cpu_second"]:.1f} images per CPU second')
  print(json.dumps(figures), flush=True)


if __name__ == '__main__':
  command.run_main(main, tensorflow=True)
