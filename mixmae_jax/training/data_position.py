"""Where each host's input stream is, as a checkpoint records it: the per-host positions and the
skipped files, so a resumed run reads the same batches and counts the same bad files once
(`all_hosts`, `DataInfo`, `resume_position`, `resume_skips`)."""
import dataclasses
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

def all_hosts(values: List[int]) -> List[List[int]]:
  """Every process's copy of a few ints, in process order."""
  if jax.process_count() == 1:
    return [list(values)]
  gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
  return np.asarray(gathered).reshape(jax.process_count(), -1).tolist()


# How many skipped files' ids a checkpoint keeps per host, so a resumed run does not count them
# again; beyond that the count stays right but a re-skipped file may be counted twice.
RECORDED_SKIPS = 16


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """Where a host's stream is after a batch: its position, the distinct undecodable elements
  skipped so far (count, and the ids of the first few) and the first few skipped names."""
  position: int = 0
  skipped: int = 0
  skipped_ids: Tuple[int, ...] = ()
  skipped_names: Tuple[str, ...] = ()

  def as_ints(self) -> List[int]:
    """A fixed-length row of ints (for gathering over hosts)."""
    ids = list(self.skipped_ids[:RECORDED_SKIPS])
    return [self.position, self.skipped] + ids + [-1] * (RECORDED_SKIPS - len(ids))


def batches_with_positions(data) -> Iterator[Tuple[Dict[str, np.ndarray], DataInfo]]:
  """(batch, DataInfo) for each batch of a resumable input: where the stream is travels with
  its batch through device prefetch to the checkpoint."""
  for batch in data:
    yield batch, DataInfo(data.position, data.skipped, tuple(data.skipped_ids),
                          tuple(data.skipped_names))


def data_meta(rows: List[List[int]]) -> Dict[str, Any]:
  """A checkpoint's record of every host's `DataInfo.as_ints()`."""
  return {'data_positions': [r[0] for r in rows], 'skipped_images': [r[1] for r in rows],
          'skipped_ids': [[i for i in r[2:] if i >= 0] for r in rows]}


def resume_skips(meta: Optional[Dict[str, Any]]) -> Tuple[int, Tuple[int, ...]]:
  """(distinct skips, their recorded ids) of this host from a checkpoint's metadata."""
  counts, ids = (meta or {}).get('skipped_images', []), (meta or {}).get('skipped_ids', [])
  if len(counts) != jax.process_count():
    return 0, ()
  i = jax.process_index()
  return int(counts[i]), tuple(ids[i]) if len(ids) == len(counts) else ()


def resume_position(meta: Dict[str, Any], step: int, per_host_batch: int) -> int:
  """This host's data position from a checkpoint's metadata.

  A different host count shards the files differently: the run restarts at the same epoch, and
  the data order differs from the original run from there on.
  """
  positions = meta.get('data_positions', [])
  if len(positions) == jax.process_count():
    return int(positions[jax.process_index()])
  log.warning('checkpoint written by %d hosts, now %d: data order differs from the original '
              'run after step %d.', len(positions), jax.process_count(), step)
  return step * per_host_batch
