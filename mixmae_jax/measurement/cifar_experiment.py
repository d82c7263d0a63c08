"""Does mixing hurt, and does homologous recognition fix it? MAE, naive mixing, MixedAE, CIFAR-10.

A small-scale check of MixedAE's central claim on real photos: the same small ViT pretrains, at
equal steps, batch and schedule, on the CIFAR-10 training photos without their labels, with
- MAE;
- naive mixing: MixedAE with all three components off (4 images per sequence, full attention,
  no segment embeddings, no contrastive loss);
- MixedAE, all three components on;
- MixedAE without segment embeddings (TopK attention and the contrastive loss must then tell
  the images apart from their content);
then each encoder, and the same encoder at its random initialization, is evaluated by k-NN and a
linear probe on the validation photos:

  mixmae-cifar-experiment --workdir=/tmp/cifar --data_root=ROOT         # the table
  mixmae-cifar-experiment --workdir=/tmp/cifar --data_root=ROOT --fast  # the test's version

The data are an ImageFolder tree ROOT/{train,val}/<class>/<image> (`--data_root`: CIFAR-10's
photos written out as image files, one folder per class). The experiment runs the real entry points:
`pretraining.train_and_evaluate` for pretraining and `evaluation.tasks.run` for the probe and
k-NN. Both read the encoder's global-pool features (mean patch token, then LayerNorm): after a
short pretraining a ViT's cls token carries little. Results go to WORKDIR/results.json.
"""
import json
import os
import time
from typing import Dict, Optional, Sequence

from absl import flags

from mixmae_jax.cli import command

from mixmae_jax.evaluation.finetune_config import linear_probe_config
from mixmae_jax.training.config_defaults import pretraining_config

IMAGE_SIZE = 32

# name -> (objective, model.objective fields): equal encoder, decoder, data and schedule.
VARIANTS = {
    'mae': ('mae', {}),
    'naive_mixing': ('mixedae', dict(segment_scope='none', homologous_attention='off',
                                     contrastive_weight=0.0)),
    'mixedae': ('mixedae', {}),
    # TopK attention and the contrastive loss, without the segment embeddings that tell every
    # token its image (and so answer the contrastive task from the input)
    'mixedae_no_segments': ('mixedae', dict(segment_scope='none')),
}

STEPS = {'full': dict(pretrain=1200, probe=500, per_class=0),
         'fast': dict(pretrain=20, probe=10, per_class=40)}


def _encoder_fields(e) -> None:
  """A ViT for 32x32 photos: patches of 4 px (an 8x8 grid, 16 patches per image in a mix)."""
  e.img_size, e.patch_size, e.embed_dim, e.depth, e.num_heads = IMAGE_SIZE, 4, 128, 4, 4


def pretrain_config(variant: str, train_folder: str, steps: int, seed: int = 0):
  objective, fields = VARIANTS[variant]
  c = pretraining_config(objective, 'vit', 'tiny')
  _encoder_fields(c.model.encoder)
  o = c.model.objective
  o.decoder_dim, o.decoder_depth, o.decoder_num_heads = 64, 2, 4
  o.update(fields)
  c.data.image_folder = train_folder  # labels unused: the class folders are just folders
  c.data.crop_scale = (0.35, 1.0)  # a 0.2 crop of a 32 px photo is a few pixels upsampled
  c.batch_size, c.num_train_steps, c.warmup_steps, c.base_lr = 64, steps, steps // 10, 4e-3
  c.log_every_steps, c.checkpoint_every_steps = max(1, min(100, steps // 5)), steps
  c.reconstruction_every_steps, c.reconstruction_images, c.seed = 0, 8, seed
  return c


def evaluation_config(task: str, data_root: str, pretrained: str, steps: int, seed: int = 0):
  """k-NN or the linear probe on the encoder's global-pool features, SGD on mild crops."""
  c = linear_probe_config('tiny', encoder='vit')
  _encoder_fields(c.model.encoder)
  c.model.encoder.global_pool = True
  c.task, c.pretrained, c.seed = task, pretrained, seed
  c.data.train_folder = os.path.join(data_root, 'train')
  c.data.eval_folder = os.path.join(data_root, 'val')
  c.data.eval_crop_pct = 1.0
  c.data.crop_scale = (0.8, 1.0)  # the probe should measure the encoder, not the augmentation
  c.batch_size, c.eval_batch_size, c.num_train_steps = 128, 500, max(1, steps)
  c.warmup_steps = steps // 10
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 100, steps, steps
  c.probe.optimizer, c.probe.norm_examples, c.base_lr = 'sgd', 2000, 0.5
  return c


def subset_tree(source: str, target: str, per_class: int) -> str:
  """TARGET/{train,val}/<class>/ with links to the first `per_class` images of each class of
  SOURCE (a fifth as many for val, at least 4): a small copy of the data for quick runs."""
  for split, count in (('train', per_class), ('val', max(4, per_class // 5))):
    for label in sorted(os.listdir(os.path.join(source, split))):
      folder = os.path.join(target, split, label)
      os.makedirs(folder, exist_ok=True)
      for name in sorted(os.listdir(os.path.join(source, split, label)))[:count]:
        link = os.path.join(folder, name)
        if not os.path.exists(link):
          os.symlink(os.path.abspath(os.path.join(source, split, label, name)), link)
  return target


def _last_metrics(workdir: str) -> Dict[str, float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    last = [json.loads(line) for line in f if line.strip()][-1]
  keys = ('loss', 'reconstruction_loss', 'contrastive_loss', 'topk_accuracy')
  return {f'pretrain_{k}': last[k] for k in keys if k in last}


def run(workdir: str, data_root: str, fast: bool = False, seed: int = 0,
        variants: Optional[list] = None) -> Dict[str, Dict[str, float]]:
  """Every number of the comparison: {encoder: {score: value}}, also in workdir/results.json.

  Rows already in workdir/results.json are kept, so an interrupted or extended run continues.
  """
  from mixmae_jax.evaluation.tasks import run as run_task  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import pretraining  # pylint: disable=import-outside-toplevel
  steps = STEPS['fast' if fast else 'full']
  if not os.path.isdir(os.path.join(data_root, 'train')):
    raise FileNotFoundError(f'--data_root={data_root!r} has no train/ folder: point it at the '
                            f'CIFAR-10 ImageFolder tree (ROOT/train/<class>/, ROOT/val/<class>/).')
  if steps['per_class']:
    data_root = subset_tree(data_root, os.path.join(workdir, 'data'), steps['per_class'])
  path = os.path.join(workdir, 'results.json')
  results = {}
  if os.path.exists(path):  # a rerun keeps the rows already done (pretraining resumes, too)
    with open(path) as f:
      results = json.load(f)
  for name in (variants or list(VARIANTS)) + ['random']:
    if 'linear_probe_top1' in results.get(name, {}):
      continue
    results[name], pretrained = {}, ''
    if name != 'random':
      pretrained = os.path.join(workdir, f'pretrain_{name}')
      start = time.perf_counter()
      pretraining.train_and_evaluate(
          pretrain_config(name, os.path.join(data_root, 'train'), steps['pretrain'], seed),
          pretrained)
      results[name]['pretrain_minutes'] = (time.perf_counter() - start) / 60
      results[name].update(_last_metrics(pretrained))
    for task, score in (('knn', 'knn_top1'), ('linear_probe', 'eval_top1')):
      config = evaluation_config(task, data_root, pretrained, steps['probe'], seed)
      results[name][f'{task}_top1'] = run_task(config, os.path.join(workdir, f'{task}_{name}'))[
          score]
    with open(path, 'w') as f:
      json.dump(results, f, indent=1)
  order = (variants or list(VARIANTS)) + ['random']
  return {name: results[name] for name in order}


def table(results: Dict[str, Dict[str, float]]) -> str:
  lines = ['| encoder | k-NN top-1 | linear probe top-1 | final reconstruction loss | '
           'final TopK accuracy |', '|---|---|---|---|---|']
  for name, r in results.items():
    recon = r.get('pretrain_reconstruction_loss', r.get('pretrain_loss'))
    cells = [f'{r["knn_top1"]:.1f}', f'{r["linear_probe_top1"]:.1f}',
             '-' if recon is None else f'{recon:.3f}',
             f'{r["pretrain_topk_accuracy"]:.3f}' if 'pretrain_topk_accuracy' in r else '-']
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'where every run and results.json go', flag_values=fv)
  flags.DEFINE_string('data_root', None, 'labelled photos as ROOT/{train,val}/<class>/<image> '
                      '(CIFAR-10 exported as image files)', flag_values=fv)
  flags.DEFINE_bool('fast', False, 'the short version the tests run', flag_values=fv)
  flags.DEFINE_list('variants', list(VARIANTS), f'a subset of {",".join(VARIANTS)}',
                    flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'seed of every run', flag_values=fv)
  flags.mark_flags_as_required(['workdir', 'data_root'], flag_values=fv)
  args, _ = command.parse(__doc__, fv, argv, 'cifar_experiment')
  variants = args.variants
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    command.fail(f'--variants: unknown {unknown}; choose from {",".join(VARIANTS)}')
  import logging  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  print('\n' + table(run(args.workdir, args.data_root, args.fast, args.seed, variants)))


if __name__ == '__main__':
  command.run_main(main, tensorflow=True)
