"""One flag dialect for every command: absl flags, `--help` listing the command's own flags
first, and one `error:` line (exit code 1) for a flag, a config or an extra a user can fix.

  def main(argv=None) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_integer('steps', 10, 'steps timed', flag_values=fv)
    args, positional = command.parse(__doc__, fv, argv)
"""
import os
import sys
import textwrap
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from absl import flags

from mixmae_jax.cli import config_files, extras, startup

HELP = ('-h', '-help', '--help', '--helpshort', '--helpfull')
FAILED = 1


def wants_help(argv: Sequence[str]) -> bool:
  return any(a in HELP for a in argv)


def _describe(flag) -> List[str]:
  kind = flag.flag_type()
  name = f'--{flag.name}'
  if kind == 'config object':  # ml_collections' config flag
    name += '=NAME_OR_PATH[:ARGS]'
  elif kind == 'bool':
    name += f' / --no{flag.name}'
  else:
    name += '=' + ('CHOICE' if kind.endswith('enum') else kind.upper().replace(' ', '_'))
  default = flag.default_as_str
  shown = default not in (None, "''", "'None'", '[]')
  text = flag.help.replace('|', ' | ') + (f' (default: {default})' if shown else '')
  return [f'  {name}'] + textwrap.wrap(text, 96, initial_indent='      ',
                                       subsequent_indent='      ', break_long_words=False)


def help_text(doc: str, own_flags: Iterable) -> str:
  """The command's docstring, then its own flags (absl's logging flags are in --helpfull)."""
  lines = [doc.strip(), '', 'Flags:']
  for flag in own_flags:
    lines += _describe(flag)
  return '\n'.join(lines) + '\n'


def own_flags(fv: flags.FlagValues) -> list:
  """The flags defined on `fv`, in the order they were defined."""
  seen, out = set(), []
  for name in fv:  # long and short names, in the order they were defined
    flag = fv[name]
    if id(flag) not in seen:
      seen.add(id(flag))
      out.append(flag)
  return out


def fail(message: str) -> None:
  """Print one `error:` line and exit with code 1."""
  line = message if message.startswith('error:') else f'error: {message}'
  sys.stderr.write(line.rstrip() + '\n')
  raise SystemExit(FAILED)


def parse(doc: str, fv: flags.FlagValues, argv: Optional[Sequence[str]],
          program: str = 'command', config_flags: Sequence[str] = ('config',)
          ) -> Tuple[flags.FlagValues, List[str]]:
  """Parse `argv` (without the program name; None: sys.argv[1:]) into `fv`.

  `--help` prints the help and exits 0; an unknown flag, a bad value or a config that is not
  found exits 1 with one `error:` line. Returns (fv, the positional arguments).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if wants_help(argv):
    sys.stdout.write(help_text(doc, own_flags(fv)))
    raise SystemExit(0)
  return fv, parse_or_fail(fv, [program] + argv, config_flags)[1:]


def parse_or_fail(fv: flags.FlagValues, argv: Sequence[str],
                  config_flags: Sequence[str] = ('config',)) -> List[str]:
  """`fv(argv)` (program name first) with configs found by name; what it cannot parse is one
  `error:` line and exit code 1. Returns the arguments that are not flags, program first."""
  try:
    return fv(config_files.resolve_argv(list(argv), [f for f in config_flags if f in fv]))
  except config_files.ConfigNotFound as e:
    fail(str(e))
  except flags.Error as e:
    fail(f'{config_files.flag_error(e)} (see --help)')
  except (AttributeError, KeyError) as e:  # ml_collections: an override naming no field
    fail(config_files.unknown_field_message(argv) or f'{type(e).__name__}: {e} (see --help)')
  return []


def fail_if_missing_extra(error: ModuleNotFoundError) -> None:
  """One `error:` line naming the install when `error` is an optional package missing; returns
  otherwise (a module of ours or of the core install missing is a broken install: re-raise)."""
  line = extras.missing_extra(error)
  if line is not None:
    fail(line)


def run_main(main: Callable[[], object], tensorflow: bool = False) -> None:
  """Run a command's `main()` as a process: quiet start-up first (`tensorflow`: the command reads
  data, so TensorFlow is loaded now with its load-time lines dropped), a missing optional
  dependency as one `error:` line naming its install, an int result as the exit code."""
  startup.quiet(tensorflow)
  try:
    result = main()
  except BrokenPipeError:  # `| head` closed the pipe: stop quietly, as shell tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(FAILED) from None
  except ModuleNotFoundError as e:
    fail_if_missing_extra(e)
    raise
  raise SystemExit(result if isinstance(result, int) else 0)
