"""How many training images per second the input pipeline makes on this host's CPUs.

  python -m mixmae_jax.measurement.pipeline_benchmark [--config=configs/NAME.py]
      [--config.data.FIELD=VALUE ...] [--image_folder DIR] [--image_size 224]
      [--batch_size 128] [--num_batches 20] [--threads N] [--no_fused_decode]

Builds the real `PretrainingInput` (decode, RandomResizedCrop, flip, batch of uint8) on a
folder, default `../shared/data/imagenet-samples` beside the repository when it is there, else the
demo images, and times `num_batches` batches after a warm-up. `--threads N` runs TensorFlow and
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

from mixmae_jax.training import entry_point

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SAMPLES = os.path.normpath(os.path.join(_REPO, '..', 'shared', 'data', 'imagenet-samples'))


def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  """The flags from `argv` (program name first); see the module docstring."""
  argv = list(argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'a config whose data fields and input size '
                                  'to use (optional)', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string('image_folder', '', 'images to read (default: the config\'s, else the '
                      'shared ImageNet samples, else the demo images)', flag_values=fv)
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
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise SystemExit(f'FATAL Flags parsing error: {e}') from e
  except (AttributeError, KeyError) as e:  # ml_collections looking up an unknown field
    raise SystemExit('FATAL Flags parsing error: ' + (
        entry_point.unknown_field_message(argv) or f'{type(e).__name__}: {e}')) from e
  if len(rest) > 1:
    raise SystemExit(f'unexpected arguments {rest[1:]}')
  return fv


def pipeline_settings(args: flags.FlagValues):
  """(data config, image size) from `--config` (or the defaults) and the plain flags."""
  from mixmae_jax.training.config_defaults import data_fields  # pylint: disable=g-import-not-at-top
  data = args.config.data.copy_and_resolve_references() if args.config else data_fields()
  size = args.image_size or (args.config.model.encoder.img_size if args.config else 224)
  if args.image_folder or not args.config:  # a config's own source ('' = the demo images)
    data.image_folder = args.image_folder or default_folder()
  if args.no_fused_decode:
    data.fused_jpeg_decode = False
  return data, size


def default_folder() -> str:
  """The shared ImageNet samples if present, else '' (the demo images)."""
  return SHARED_SAMPLES if os.path.isdir(SHARED_SAMPLES) else ''


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


def run(args: flags.FlagValues) -> Dict[str, object]:
  """Times the pipeline as `args` say; returns the figures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if args.threads:  # must precede the first TF op
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from mixmae_jax.data import pretraining as input_pipeline  # pylint: disable=g-import-not-at-top

  data, image_size = pipeline_settings(args)
  source = input_pipeline.open_source(data)
  pipeline = input_pipeline.PretrainingInput(
      data, image_size=image_size, per_host_batch=args.batch_size, seed=args.seed,
      threads=args.threads or None)
  for _ in range(args.warmup_batches):
    next(pipeline)
  start = time.perf_counter()
  for _ in range(args.num_batches):
    next(pipeline)
  seconds = time.perf_counter() - start
  cores = args.threads or os.cpu_count() or 1
  images_per_sec = args.num_batches * args.batch_size / seconds
  return {
      'images_per_sec': round(images_per_sec, 1),
      'images_per_sec_per_core': round(images_per_sec / cores, 1),
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
  }


def main(argv: Optional[Sequence[str]] = None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  figures = run(parse_flags(['pipeline_benchmark'] + list(sys.argv[1:] if argv is None
                                                         else argv)))
  print(f'source: {figures["source"]} ({figures["source_images"]} images, mean '
        f'{figures["mean_source_pixels"]} pixels)')
  print(f'{figures["images_per_sec"]:.1f} images/s at {figures["image_size"]}px on '
        f'{figures["cores"]} cores: {figures["images_per_sec_per_core"]:.1f} images/s per core')
  print(json.dumps(figures), flush=True)


if __name__ == '__main__':
  main()
