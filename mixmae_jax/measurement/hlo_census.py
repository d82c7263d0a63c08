"""What a compiled step spends its operations on, read from XLA's optimized HLO text.

`census(text)` sorts every instruction XLA will run (the entry computation's, loop bodies' and
conditionals', not the insides of fusions) into kinds: `matmul` (dots and convolutions, fused or
not), `data_movement` (copies, transposes and fusions that only move data: window partition and
merge, head splits; what `benchmark --hlo_census` counts to see whether a backend removes the
Swin step's layout copies), `collective`, `other` (elementwise and reduction fusions), with
the bytes each kind writes. The same step compiled for a CPU and for a TPU slice
(`--tpu_topology`) can so be compared without running either.
"""
import re
from typing import Dict, List, Tuple

DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
               'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8}
MOVES = {'copy', 'transpose', 'bitcast', 'reshape', 'slice', 'concatenate', 'parameter',
         'broadcast', 'dynamic-slice', 'dynamic-update-slice', 'pad', 'tuple',
         'get-tuple-element', 'copy-start', 'copy-done', 'constant'}
MATMULS = {'dot', 'convolution'}
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
               'collective-permute')
KINDS = ('matmul', 'data_movement', 'collective', 'other')
_HEADER = re.compile(r'^\s*(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+\d*|pred)\[([\d,]*)\]')


def _bytes(shape: str) -> int:
  total = 0
  for dtype, dims in _ARRAY.findall(shape):
    size = DTYPE_BYTES.get(dtype, 4)
    for d in filter(None, dims.split(',')):
      size *= int(d)
    total += size
  return total


def parse(text: str) -> Tuple[Dict[str, List[Tuple[str, str, str]]], str]:
  """({computation: [(opcode, output shape, rest of line)]}, the entry computation's name)."""
  computations, entry, current = {}, '', None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group(2)
      computations[current] = []
      entry = current if header.group(1) else entry
      continue
    if current is None:
      continue
    if line.strip() == '}':
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match:
      computations[current].append((match.group(4), match.group(3), match.group(5)))
  return computations, entry


def _called(rest: str) -> List[str]:
  names = re.findall(r'(?:calls|body|condition|to_apply|branch_computations)=\{?%?([\w.\-, %]+)',
                     rest)
  return [n.strip().lstrip('%') for group in names for n in group.split(',') if n.strip()]


def kind_of(opcode: str, rest: str, computations) -> str:
  """The kind of one instruction; a fusion by what its fused computation contains."""
  if opcode in MATMULS or opcode == 'custom-call' and re.search(r'matmul|gemm|conv', rest):
    return 'matmul'
  if opcode.startswith(COLLECTIVES):
    return 'collective'
  if opcode == 'fusion':
    inside = [op for name in _called(rest) for op, _, _ in computations.get(name, [])]
    if any(op in MATMULS for op in inside):
      return 'matmul'
    return 'data_movement' if inside and all(op in MOVES for op in inside) else 'other'
  return 'data_movement' if opcode in MOVES else 'other'


def _running(computations, entry: str) -> List[str]:
  """The entry computation and those it runs as control flow (loop bodies and conditions,
  branches, calls), not fused computations or reducers."""
  seen, todo = [], [entry]
  while todo:
    name = todo.pop()
    if name in seen or name not in computations:
      continue
    seen.append(name)
    for opcode, _, rest in computations[name]:
      if opcode in ('while', 'conditional', 'call') or opcode.endswith('-start'):
        todo += _called(rest)
  return seen


def census(text: str) -> Dict[str, Dict[str, int]]:
  """{kind: {'count', 'bytes'}} over the instructions that run (fusion insides not counted
  again); loops' and conditionals' bodies are counted once, as written."""
  computations, entry = parse(text)
  out = {kind: {'count': 0, 'bytes': 0} for kind in KINDS}
  for name in _running(computations, entry):
    for opcode, shape, rest in computations[name]:
      if opcode in ('parameter', 'tuple', 'get-tuple-element', 'constant', 'bitcast',
                    'while', 'conditional', 'call'):
        continue  # no work of their own
      kind = kind_of(opcode, rest, computations)
      out[kind]['count'] += 1
      out[kind]['bytes'] += _bytes(shape)
  return out
