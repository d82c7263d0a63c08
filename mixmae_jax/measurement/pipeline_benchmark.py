"""How many training images per second the input pipeline makes on this host's CPUs.

  python -m mixmae_jax.measurement.pipeline_benchmark [--image_folder DIR] [--image_size 224]
      [--batch_size 128] [--num_batches 20] [--threads N]

Builds the real `PretrainingInput` (decode, RandomResizedCrop, flip, batch of uint8) on a
folder, default `../shared/data/imagenet-samples` beside the repository when it is there, else the
demo images, and times `num_batches` batches after a warm-up. `--threads N` runs TensorFlow and
tf.data on N threads so the per-core figure means something; without it every core is used.
The last line printed is a JSON object with the figures.
"""
import argparse
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SAMPLES = os.path.normpath(os.path.join(_REPO, '..', 'shared', 'data', 'imagenet-samples'))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--image_folder', default='',
                      help='images to read (default: the shared ImageNet samples, else the demo '
                           'images)')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--num_batches', type=int, default=20, help='batches timed')
  parser.add_argument('--warmup_batches', type=int, default=3,
                      help='batches read before timing (fills the prefetch buffers)')
  parser.add_argument('--threads', type=int, default=0,
                      help='threads for TF and tf.data (0: all cores)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--no_fused_decode', action='store_true',
                      help='decode whole JPEGs, then crop (to measure what fusing saves)')
  return parser.parse_args(argv)


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


def run(args: argparse.Namespace) -> Dict[str, object]:
  """Times the pipeline as `args` say; returns the figures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if args.threads:  # must precede the first TF op
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from mixmae_jax.data import pretraining as input_pipeline  # pylint: disable=g-import-not-at-top
  from mixmae_jax.training.config_defaults import data_fields  # pylint: disable=g-import-not-at-top

  data = data_fields()
  data.image_folder = args.image_folder or default_folder()
  data.fused_jpeg_decode = not args.no_fused_decode
  source = input_pipeline.open_source(data)
  pipeline = input_pipeline.PretrainingInput(
      data, image_size=args.image_size, per_host_batch=args.batch_size, seed=args.seed,
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
      'image_size': args.image_size,
      'num_batches': args.num_batches,
      'seconds': round(seconds, 3),
      'source': data.image_folder or input_pipeline.DEMO_IMAGES,
      'source_images': source.size,
      'mean_source_pixels': round(mean_pixels(source.files)),
      'skipped': pipeline.skipped,
      'fused_jpeg_decode': data.fused_jpeg_decode,
  }


def main(argv: Optional[Sequence[str]] = None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  figures = run(parse_args(argv))
  print(f'source: {figures["source"]} ({figures["source_images"]} images, mean '
        f'{figures["mean_source_pixels"]} pixels)')
  print(f'{figures["images_per_sec"]:.1f} images/s at {figures["image_size"]}px on '
        f'{figures["cores"]} cores: {figures["images_per_sec_per_core"]:.1f} images/s per core')
  print(json.dumps(figures), flush=True)


if __name__ == '__main__':
  main()
