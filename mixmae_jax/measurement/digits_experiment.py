"""Does the whole chain learn? Pretrain on real digits, probe and fine-tune, against random init.

The data are scikit-learn's bundled handwritten digits (1797 greyscale 8x8 scans of 10 digits,
available offline), upsampled bilinearly to 32x32 and written as an ImageFolder tree with a
stratified 80/20 train/val split:

  mixmae-digits-experiment --workdir=/tmp/digits              # the documented numbers
  mixmae-digits-experiment --workdir=/tmp/digits --fast       # the test's version
  mixmae-digits-experiment --workdir=/tmp/digits --data_only  # just the folders

The experiment runs the real entry points: `pretraining.train_and_evaluate` pretrains a small
MixMAE Swin on the train split's images (labels unused), then `evaluation.tasks.run` linear-probes,
fine-tunes and k-NN-evaluates that encoder and the same encoder at its random initialization.
Needs scikit-learn (`pip install -e '.[test]'`).
"""
import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
from absl import flags
from PIL import Image

from mixmae_jax.cli import command
from mixmae_jax.evaluation.finetune_config import finetune_config, linear_probe_config
from mixmae_jax.training.config_defaults import pretraining_config

IMAGE_SIZE = 32


def write_digits_folders(root: str, size: int = IMAGE_SIZE, seed: int = 0) -> Dict[str, int]:
  """ROOT/train/<digit>/<i>.png and ROOT/val/<digit>/<i>.png; returns the split sizes."""
  # scikit-learn ships the digits ([digits] extra); without it the command says which install
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8], 0-16 -> 0-255
  index = np.arange(len(pixels))
  train, val = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=seed)
  for split, members in (('train', train), ('val', val)):
    for i in members:
      folder = os.path.join(root, split, str(digits.target[i]))
      os.makedirs(folder, exist_ok=True)
      image = Image.fromarray(pixels[i]).resize((size, size), Image.BILINEAR)
      image.save(os.path.join(folder, f'{i:04d}.png'))
  return {'train': len(train), 'val': len(val)}


def _encoder_fields(e) -> None:
  """A small MixMAE Swin for 32x32 inputs: patch 4, three stages (stride 16, a 2x2 mix grid)."""
  e.img_size, e.patch_size, e.embed_dim = IMAGE_SIZE, 4, 32
  e.depths, e.num_heads, e.window_sizes = (1, 1, 1), (2, 4, 8), (8, 4, 2)


def pretrain_config(data_root: str, steps: int, seed: int = 0):
  c = pretraining_config('mixmae', 'swin', 'tiny')
  _encoder_fields(c.model.encoder)
  o = c.model.objective
  o.decoder_dim, o.decoder_depth, o.decoder_num_heads = 64, 2, 4
  c.data.image_folder = os.path.join(data_root, 'train')
  c.data.crop_scale = (0.35, 1.0)  # a 0.2 crop of an 8x8 digit is a stroke or two
  c.data.hflip = False  # digits are not mirror-symmetric
  c.batch_size, c.num_train_steps, c.warmup_steps, c.base_lr = 64, steps, steps // 10, 1e-3
  c.log_every_steps, c.checkpoint_every_steps, c.reconstruction_every_steps = 100, steps, 0
  c.reconstruction_images, c.seed = 0, seed
  return c


def evaluation_config(task: str, data_root: str, pretrained: str, steps: int, seed: int = 0):
  """A fine-tuning, linear-probe or k-NN config for the digits: the recipes, shrunk to 32x32.

  The probe trains with SGD (LARS needs MAE's batch of 16384) on mild crops (0.8-1: the probe
  should measure the encoder, not fight the augmentation); fine-tuning keeps Mixup, CutMix,
  erasing and label smoothing on (0.35-1) crops but no RandAugment (too strong for 8x8 scans).
  """
  probe = task in ('linear_probe', 'knn')
  c = linear_probe_config('tiny') if probe else finetune_config('tiny')
  _encoder_fields(c.model.encoder)
  c.task, c.pretrained, c.seed = task, pretrained, seed
  c.data.train_folder = os.path.join(data_root, 'train')
  c.data.eval_folder = os.path.join(data_root, 'val')
  c.data.hflip = False
  c.data.eval_crop_pct = 1.0
  c.data.crop_scale = (0.8, 1.0) if probe else (0.35, 1.0)
  c.batch_size, c.eval_batch_size, c.num_train_steps = 64, 120, steps
  c.warmup_steps = steps // 10
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 100, steps, steps
  c.probe.optimizer, c.probe.norm_examples = 'sgd', 1437
  if probe:
    c.base_lr = 1.0
  else:
    c.base_lr, c.augment.rand_augment = 1e-3, ''
  return c


STEPS = {'full': dict(pretrain=4000, probe=1000, finetune=1500),
         'fast': dict(pretrain=1000, probe=300)}


def run(workdir: str, fast: bool = False, seed: int = 0) -> Dict[str, Dict[str, float]]:
  """Every number of the comparison: {encoder: {score: value}}, also in workdir/results.json.

  The fast version (the test's) pretrains 1000 steps and only probes; the full one pretrains
  4000 steps, then probes, fine-tunes and runs k-NN.
  """
  from mixmae_jax.evaluation.tasks import run as run_task  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import pretraining  # pylint: disable=import-outside-toplevel
  data_root = os.path.join(workdir, 'data')
  if not os.path.isdir(data_root):
    write_digits_folders(data_root)
  steps = STEPS['fast' if fast else 'full']
  pretrained = os.path.join(workdir, 'pretrain')
  pretraining.train_and_evaluate(pretrain_config(data_root, steps['pretrain'], seed), pretrained)
  tasks = [('linear_probe', 'probe', 'eval_top1')]
  if not fast:
    tasks += [('finetune', 'finetune', 'eval_top1'), ('knn', 'probe', 'knn_top1')]
  results = {}
  for name, path in (('pretrained', pretrained), ('random', '')):
    results[name] = {}
    for task, length, score in tasks:
      config = evaluation_config(task, data_root, path, steps[length], seed)
      out = run_task(config, os.path.join(workdir, f'{task}_{name}'))
      results[name][f'{task}_top1'] = out[score]
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)
  return results


def main(argv: Optional[Sequence[str]] = None) -> None:
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'where the data, every run and results.json go',
                      flag_values=fv)
  flags.DEFINE_bool('fast', False, 'the short version the tests run', flag_values=fv)
  flags.DEFINE_bool('data_only', False, 'only write WORKDIR/data', flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'seed of every run', flag_values=fv)
  flags.mark_flag_as_required('workdir', flag_values=fv)
  args, _ = command.parse(__doc__, fv, argv, 'digits_experiment')
  if args.data_only:
    sizes = write_digits_folders(os.path.join(args.workdir, 'data'))
    print(f'wrote {sizes} images under {os.path.join(args.workdir, "data")}/{{train,val}}')
    return
  import logging  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  results = run(args.workdir, args.fast, args.seed)
  keys = sorted({k for scores in results.values() for k in scores})
  print('\n| encoder | ' + ' | '.join(keys) + ' |\n|---|' + '---|' * len(keys))
  for name, scores in results.items():
    print(f'| {name} | ' + ' | '.join(f'{scores[k]:.1f}' for k in keys) + ' |')


if __name__ == '__main__':
  command.run_main(main, tensorflow=True)
