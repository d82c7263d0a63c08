"""Which pretraining gives the better encoder? CIFAR-10 studies with seeds, ties and costs.

Two studies (`cifar_rows.py` says what each row is):
- `--study=mixedae`: MixedAE's options one factor at a time against MAE and naive mixing, on one
  small ViT at 32 px;
- `--study=methods`: MixMAE, MAE, MixedAE (and naive mixing), UM-MAE (Swin and PVT) and SimMIM,
  each on its own encoder family at 128 px in its paper's proportions, beside each encoder at
  random initialisation.
Every row pretrains on the training photos without their labels, then its encoder is scored on
the evaluation photos by k-NN, a linear probe and a short fine-tune, for every seed:

  mixmae-cifar-experiment --study=methods --workdir=/tmp/methods --tfds_name=cifar10 \\
      --seeds=0,1,2
  mixmae-cifar-experiment --study=mixedae --workdir=/tmp/mixedae --data_root=ROOT
  mixmae-cifar-experiment --study=methods --workdir=/tmp/t --data_root=ROOT --fast  # the test's

The photos come from TFDS (`--tfds_name=cifar10`: its 'train' split to pretrain and train the
probes, `--tfds_eval_split`, 'test', to score) or an ImageFolder tree ROOT/{train,val}/<class>/
(`--data_root`). The runs are the real entry points (`pretraining.train_and_evaluate`,
`evaluation.tasks.run`). WORKDIR/seed_<s>/results.json keeps every finished score, so a rerun,
after an interruption or with more seeds, rows or tasks, only runs what is missing (with the
same study and schedule: WORKDIR/schedule.json refuses a mix). At the end
WORKDIR/summary.md holds the table (mean ± standard deviation over the seeds; the best of each
column and every row within two standard errors of it in bold: a tie, not a win) and the
comparisons that matter, and WORKDIR/accuracy_vs_cost.png plots fine-tuning top-1 against the CPU
seconds each pretraining spent per image.
"""
import json
import os
import time
from typing import Dict, List, Optional, Sequence

from absl import flags

from mixmae_jax.cli import command
from mixmae_jax.measurement import cifar_rows, experiment_report
from mixmae_jax.measurement.cifar_rows import ROWS, SCHEDULES, STUDIES, TASKS, Data

SCORES = {'knn': 'knn_top1', 'linear_probe': 'eval_top1', 'finetune': 'eval_top1'}
COLUMNS = [('k-NN top-1', 'knn_top1', 1), ('linear probe top-1', 'linear_probe_top1', 1),
           ('fine-tune top-1', 'finetune_top1', 1),
           ('pretraining CPU s / image', 'pretrain_cpu_s_per_image', 4),
           ('train GFLOPs / image', 'train_gflops_per_image', 2),
           ('reconstruction loss', 'pretrain_reconstruction_loss', 3),
           ('contrastive loss', 'pretrain_contrastive_loss', 3),
           ('gap to slot-code floor', 'pretrain_contrastive_gap', 3),
           ('TopK accuracy', 'pretrain_topk_accuracy', 3),
           ('feature rank', 'pretrain_feature_rank', 1)]
METRICS = ('loss', 'reconstruction_loss', 'contrastive_loss', 'topk_accuracy', 'contrastive_gap',
           'feature_rank')


def subset_tree(source: str, target: str, per_class: int, val_per_class: int) -> str:
  """TARGET/{train,val}/<class>/ with links to the first `per_class` training and
  `val_per_class` evaluation photos of each class of SOURCE (0: all): a smaller copy."""
  for split, count in (('train', per_class), ('val', val_per_class)):
    for label in sorted(os.listdir(os.path.join(source, split))):
      folder = os.path.join(target, split, label)
      os.makedirs(folder, exist_ok=True)
      names = sorted(os.listdir(os.path.join(source, split, label)))
      for name in names[:count] if count else names:
        link = os.path.join(folder, name)
        if not os.path.exists(link):
          os.symlink(os.path.abspath(os.path.join(source, split, label, name)), link)
  return target


def _metrics_log(workdir: str) -> List[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def pretrain(study: str, name: str, data: Data, schedule, seed: int, workdir: str) -> dict:
  """Pretrains a row (resuming a run cut short) and returns its pretraining figures: the last
  logged metrics, process CPU seconds per image of this call's steps, training FLOPs/image."""
  from mixmae_jax import objectives  # pylint: disable=import-outside-toplevel
  from mixmae_jax.training import pretraining  # pylint: disable=import-outside-toplevel
  config = cifar_rows.pretrain_config(study, name, data, schedule, seed)
  before = (_metrics_log(workdir) or [{'step': 0}])[-1]['step']
  wall, cpu = time.perf_counter(), time.process_time()
  pretraining.train_and_evaluate(config, workdir)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  last = _metrics_log(workdir)[-1]
  out = {f'pretrain_{k}': last[k] for k in METRICS if k in last}
  images = (last['step'] - before) * config.batch_size
  if images > 0:
    out.update(pretrain_cpu_s_per_image=cpu / images, pretrain_minutes=wall / 60)
  module = objectives.objective_module(config.model.objective.name)
  arch = objectives.objective_config(config.model)
  out['train_gflops_per_image'] = module.flops_per_image(arch)['train'] / 1e9
  return out


def run_row(study: str, name: str, data: Data, schedule, seed: int, seed_dir: str,
            results: Dict[str, dict], tasks: Sequence[str], save) -> None:
  """Whatever of a row is missing from `results`: its pretraining, then each task's score."""
  from mixmae_jax.evaluation.tasks import run as run_task  # pylint: disable=import-outside-toplevel
  row, scores = ROWS[study][name], results.setdefault(name, {})
  pretrained = ''
  if not row.random_of:
    pretrained = os.path.join(seed_dir, f'pretrain_{name}')
    if 'pretrain_loss' not in scores:
      scores.update(pretrain(study, name, data, schedule, seed, pretrained))
      save()
  for task in tasks:
    if f'{task}_top1' not in scores:
      config = cifar_rows.evaluation_config(task, study, name, data, pretrained, schedule, seed)
      scores[f'{task}_top1'] = run_task(config, os.path.join(seed_dir, f'{task}_{name}'))[
          SCORES[task]]
      save()


def run_seed(study: str, rows: Sequence[str], data: Data, schedule, seed: int, workdir: str,
             tasks: Sequence[str] = TASKS) -> Dict[str, dict]:
  """Every row of one seed; WORKDIR/seed_<seed>/results.json, kept across reruns."""
  seed_dir = os.path.join(workdir, f'seed_{seed}')
  os.makedirs(seed_dir, exist_ok=True)
  path = os.path.join(seed_dir, 'results.json')
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)

  def save():
    with open(path + '.tmp', 'w') as f:
      json.dump(results, f, indent=1)
    os.replace(path + '.tmp', path)  # a kill mid-write leaves the previous file whole

  for name in rows:
    run_row(study, name, data, schedule, seed, seed_dir, results, tasks, save)
  return results


def report(study: str, rows: Sequence[str], per_seed: Dict[str, dict], workdir: str) -> str:
  """summary.md and accuracy_vs_cost.png in WORKDIR; returns the Markdown."""
  summary = experiment_report.summarise(per_seed)
  pairs = [(a, b) for a, b in (('mixedae', 'naive_mixing'), ('mixedae', 'mae'),
                               ('naive_mixing', 'mae')) if a in rows and b in rows]
  pairs += [(name, 'naive_mixing') for name in rows
            if name.startswith('mixedae_') and 'naive_mixing' in rows]
  pairs += [(ROWS[study][name].random_of, name) for name in rows
            if ROWS[study][name].random_of in rows]
  text = '\n'.join([f'# CIFAR-10 study: {study}', '', experiment_report.markdown(
      summary, COLUMNS, rows), '', 'Differences (mean ± standard error of the difference; '
      'under two standard errors is a tie):', ''] + experiment_report.comparison_lines(
          summary, pairs, ['knn_top1', 'linear_probe_top1', 'finetune_top1'])) + '\n'
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write(text)
  experiment_report.plot(summary, 'pretrain_cpu_s_per_image', 'finetune_top1',
                         os.path.join(workdir, 'accuracy_vs_cost.png'),
                         f'CIFAR-10 {study}: fine-tune top-1 against pretraining CPU s / image')
  return text


def prepare_data(args, schedule, workdir: str) -> Data:
  """The study's photos: a TFDS name, or the tree (a linked subset when the schedule asks)."""
  if args.tfds_name:
    return Data(tfds_name=args.tfds_name, tfds_data_dir=args.tfds_data_dir,
                tfds_eval_split=args.tfds_eval_split,
                train_examples=10 * schedule['per_class'])
  if not os.path.isdir(os.path.join(args.data_root, 'train')):
    command.fail(f'--data_root={args.data_root!r} has no train/ folder: point it at an '
                 f'ImageFolder tree ROOT/train/<class>/, ROOT/val/<class>/, or use '
                 f'--tfds_name=cifar10.')
  root = args.data_root
  if schedule['per_class'] or schedule.get('val_per_class'):
    root = subset_tree(root, os.path.join(workdir, 'data'), schedule['per_class'],
                       schedule.get('val_per_class', 0))
  return Data(root=root)


def same_schedule(workdir: str, study: str, schedule: Dict[str, int]) -> None:
  """WORKDIR/schedule.json records the study and schedule its scores were made with; a rerun
  with another (`--fast` on a full workdir, another study) is refused rather than mixed in."""
  path = os.path.join(workdir, 'schedule.json')
  record = {'study': study, **schedule}
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    if before != record:
      command.fail(f'{workdir} holds scores of {before}, not {record}: give another --workdir '
                   f'(or the flags it was made with)')
    return
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f)
  os.replace(path + '.tmp', path)


def run(args) -> str:
  """Every seed's rows, then the summary; returns the summary's Markdown."""
  schedule = SCHEDULES['fast' if args.fast else args.study]
  os.makedirs(args.workdir, exist_ok=True)
  same_schedule(args.workdir, args.study, schedule)
  data = prepare_data(args, schedule, args.workdir)
  rows = args.rows or list(ROWS[args.study])
  per_seed = {}
  for seed in args.seeds:
    per_seed[str(seed)] = run_seed(args.study, rows, data, schedule, int(seed), args.workdir,
                                   args.tasks)
  return report(args.study, rows, per_seed, args.workdir)


def main(argv: Optional[Sequence[str]] = None) -> None:
  fv = flags.FlagValues()
  flags.DEFINE_enum('study', 'methods', STUDIES, 'which table', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'where every run, results and the summary go',
                      flag_values=fv)
  flags.DEFINE_string('data_root', '', 'labelled photos as ROOT/{train,val}/<class>/<image>',
                      flag_values=fv)
  flags.DEFINE_string('tfds_name', '', 'a TFDS dataset with labels instead, e.g. cifar10',
                      flag_values=fv)
  flags.DEFINE_string('tfds_data_dir', '', 'TFDS data_dir', flag_values=fv)
  flags.DEFINE_string('tfds_eval_split', 'test', 'the TFDS split to score on', flag_values=fv)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'seeds; each a full table', flag_values=fv)
  flags.DEFINE_list('rows', [], 'a subset of the study\'s rows (default: all)', flag_values=fv)
  flags.DEFINE_list('tasks', list(TASKS), f'a subset of {",".join(TASKS)}', flag_values=fv)
  flags.DEFINE_bool('fast', False, 'the short version the tests run (every row, few steps)',
                    flag_values=fv)
  flags.mark_flag_as_required('workdir', flag_values=fv)
  args, _ = command.parse(__doc__, fv, argv, 'cifar_experiment')
  if bool(args.data_root) == bool(args.tfds_name):
    command.fail('give one of --data_root (an ImageFolder tree) or --tfds_name (e.g. cifar10)')
  for flag, given, known in (('rows', args.rows, ROWS[args.study]), ('tasks', args.tasks, TASKS)):
    unknown = sorted(set(given) - set(known))
    if unknown:
      command.fail(f'--{flag}: unknown {unknown}; choose from {",".join(known)}')
  bad = [s for s in args.seeds if not s.isdigit()]
  if bad:
    command.fail(f'--seeds: {bad} are not whole numbers, e.g. --seeds=0,1,2')
  import logging  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)
  print('\n' + run(args))


if __name__ == '__main__':
  command.run_main(main, tensorflow=True)
