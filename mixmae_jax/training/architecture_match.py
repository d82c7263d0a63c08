"""Does a checkpoint's recorded architecture fit the one the config asks for?

Checked before a resumed run reads any array, so a changed `model.encoder.embed_dim` is named
instead of failing deep inside Flax with a shape error. A field that changes the params' shapes
(width, depth, heads, patch, classes, ...) stops the run; one that does not (drop path, a mask
ratio) is allowed and named in a warning, as the run resumes with the config's value.
"""
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Tuple

import jax

from mixmae_jax import architectures

log = logging.getLogger(__name__)


class ArchitectureMismatch(ValueError):
  """A checkpoint made by a model whose params have other shapes than the config's."""


def _flat(record: Any, prefix: str = '') -> Dict[str, Any]:
  if isinstance(record, dict):
    out = {}
    for k, v in record.items():
      out.update(_flat(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: record}


def _plain(record: Dict[str, Any]) -> Dict[str, Any]:
  """A record as JSON stores it (tuples become lists), with legacy forms read as today's."""
  return json.loads(json.dumps(architectures.to_dict(architectures.from_dict(record))))


def differences(recorded: Dict[str, Any], wanted: Dict[str, Any],
                ignore: Iterable[str] = ()) -> List[Tuple[str, Any, Any]]:
  """(field, checkpoint's value, config's value) of every field where two records differ."""
  a, b = _flat(_plain(recorded)), _flat(_plain(wanted))
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in set(ignore)]


def _shapes(record: Dict[str, Any]) -> Any:
  model = architectures.build_model(architectures.from_dict(record))
  return jax.tree.map(lambda x: tuple(x.shape), architectures.abstract_params(model))


def check(recorded: Dict[str, Any], wanted: Dict[str, Any], where: str,
          ignore: Iterable[str] = ()) -> None:
  """Raise ArchitectureMismatch naming the differing fields when the params' shapes differ;
  log a warning naming them when only other fields differ."""
  diffs = differences(recorded, wanted, ignore)
  if not diffs:
    return
  listing = '; '.join(f'{k}: checkpoint {a!r}, config {b!r}' for k, a, b in diffs)
  if _shapes(recorded) != _shapes(wanted):
    raise ArchitectureMismatch(
        f'{where} was written by another architecture ({listing}). Set the config back to the '
        f'checkpoint\'s values (these are fields of model.encoder / model.objective) to resume, '
        f'or give a new --workdir to start a new run.')
  log.warning('resuming %s with fields changed since it was written (%s); the config\'s values '
              'apply from here on.', where, listing)


def meta_check(wanted: Dict[str, Any], ignore: Iterable[str] = ()
               ) -> Callable[[Dict[str, Any]], None]:
  """A `check_meta` for `Checkpointer.restore`: the step's recorded architecture against
  `wanted` (a record from `architectures.to_dict`)."""
  def check_meta(meta: Dict[str, Any]) -> None:
    if 'arch' in meta:
      check(meta['arch'], wanted, f'checkpoint step {meta.get("step", "?")}', ignore)
  return check_meta
