"""The words after the colon in `--config=NAME:ARGS`: one grammar for every config.

ARGS is comma-separated words (`runlocal`, `vit`, `naive,runlocal`); each config declares the
words it knows, and a word it does not know is an error listing them, never silently ignored.
"""
import os
from typing import FrozenSet, Optional, Sequence


def words(arg: Optional[str], known: Sequence[str], config: str = 'this config'
          ) -> FrozenSet[str]:
  """`arg` (None or '' for none) -> its words; ValueError naming an unknown one and the known.

  `config`: the config file's path or name, for the message.
  """
  given = [w.strip() for w in (arg or '').split(',') if w.strip()]
  name = os.path.splitext(os.path.basename(config))[0]
  unknown = [w for w in given if w not in known]
  if unknown:
    choices = (f'it knows {", ".join(known)} (comma-separated)' if known
               else 'it takes none')
    raise ValueError(f'config {name} has no argument {unknown[0]!r}: {choices}.')
  return frozenset(given)
