"""How a model computes, as opposed to what: the attention kernel, scanned blocks, remat.

None of these options changes the function a model computes beyond floating-point rounding, so
they are not part of the architecture a checkpoint records: a checkpoint written under any
setting loads and trains under any other. Training configs set them as `model.attention`,
`model.scan_blocks` and `model.remat`.

- `attention`: 'auto' uses cuDNN's fused (flash) attention on NVIDIA GPUs wherever its limits
  allow and XLA's `jax.nn.dot_product_attention` elsewhere; 'xla' always the latter; 'plain' the
  reference einsum-softmax-einsum (`layers.attention_weights_and_values`).
- `scan_blocks`: run the repeated blocks of a stage as one `nn.scan` loop, so XLA compiles one
  block per stage instead of all of them (see `block_scan.py`). Its init splits keys
  differently, so a fresh run's initial params differ from the unrolled model's for the same
  seed.
- `stacked_params` (with `scan_blocks`): the scanned stages keep their params stacked, the scan's
  own layout, instead of per block. A pretraining state uses it whenever it scans (no copies in
  the step; checkpoints convert, `block_scan.relayout`); models built for tools (`load`,
  fine-tuning, whose layer-wise decay names every block) keep the per-block layout.
- `remat`: activation checkpointing of every encoder block, by policy (`REMAT_POLICIES`).
"""
import dataclasses
from typing import Callable, List, Optional

import jax

ATTENTION_IMPLEMENTATIONS = ('auto', 'xla', 'plain')

# What each encoder block keeps for the backward pass; the rest is recomputed.
REMAT_POLICIES = {
    'none': None,  # keep everything (no rematerialisation)
    # Keep only the block's input: the whole block runs again in the backward pass (~+1/3 FLOPs).
    'block': jax.checkpoint_policies.nothing_saveable,
    # Keep the outputs of the linear layers (qkv, proj, fc1, fc2); recompute attention
    # probabilities, norms and GELU, whose [windows, heads, N, N] tensors dominate memory.
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ComputeOptions:
  """Implementation choices for the Swin encoder and the decoder; defaults are the measured best."""
  attention: str = 'auto'
  scan_blocks: bool = False  # see PERFORMANCE.md: on CPU it costs memory and time
  remat: str = 'none'
  stacked_params: bool = False  # with scan_blocks: params in the scan's layout (block_scan.py)

  def problems(self) -> List[str]:
    out = []
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      out.append(f'attention={self.attention!r}: use one of {", ".join(ATTENTION_IMPLEMENTATIONS)}'
                 f' (auto: cuDNN where it applies, else XLA).')
    if self.remat not in REMAT_POLICIES:
      out.append(f'remat={self.remat!r}: use one of {", ".join(REMAT_POLICIES)} (block saves '
                 f'the most memory, dots keeps the matmul outputs).')
    if not isinstance(self.scan_blocks, bool):
      out.append(f'scan_blocks={self.scan_blocks!r} must be True or False.')
    return out

  @property
  def remat_policy(self) -> Optional[Callable]:
    return REMAT_POLICIES[self.remat]


def options_from_config(m, stacked: bool = False) -> ComputeOptions:
  """ComputeOptions from the `model` fields of a training config; absent fields keep defaults.
  `stacked`: a training state that stores scanned stages stacked (pretraining)."""
  defaults = ComputeOptions()
  scan = m.get('scan_blocks', defaults.scan_blocks)
  return ComputeOptions(attention=m.get('attention', defaults.attention), scan_blocks=scan,
                        remat=m.get('remat', defaults.remat),
                        stacked_params=bool(stacked and scan is True))
