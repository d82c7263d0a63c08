"""`python -m mixmae_jax.weights list | download NAME | path NAME`: the published releases."""
from typing import Optional, Sequence

from absl import flags

from mixmae_jax.cli import command
from mixmae_jax.weights import RELEASES, WeightsError, cache, converted

DOC = """Pretrained weights by name.

  mixmae-weights list            # one line per name: name, published file, holds, converter, score
  mixmae-weights download NAME   # fetch and convert into the cache now
  mixmae-weights path NAME       # where its converted checkpoint is
  mixmae-weights markdown        # the table as docs/weights.md shows it

(`python -m mixmae_jax.weights` is the same command.)
The cache is $MIXMAE_JAX_CACHE (default ~/.cache/mixmae_jax). A file downloaded by hand and
placed there under its published name is used as if downloaded.
"""


def listing() -> str:
  rows = [(r.name, r.file_name, r.holds, r.arch, r.published) for r in RELEASES.values()]
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + '  ' + row[4]
                   for row in rows)


def markdown() -> str:
  """The table as docs/weights.md shows it (a test keeps the two equal)."""
  lines = ['| name | published file | holds | converter | reported |', '|---|---|---|---|---|']
  for r in RELEASES.values():
    lines.append(f'| `{r.name}` | [{r.file_name}]({r.address}) | {r.holds} | `{r.arch}` | '
                 f'{r.published} |')
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  fv = flags.FlagValues()
  _, args = command.parse(DOC, fv, argv, 'weights')
  if args == ['list']:
    print(listing())
    return 0
  if args == ['markdown']:
    print(markdown())
    return 0
  if len(args) == 2 and args[0] in ('download', 'path'):
    try:
      print(converted(args[1]))
    except WeightsError as e:
      command.fail(str(e))
    return 0
  command.fail(f'expected `list`, `download NAME` or `path NAME`, got {args or "nothing"} '
               f'(cache: {cache.root()})')
  return 1


if __name__ == '__main__':
  command.run_main(main)
