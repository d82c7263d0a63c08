"""MixedAE's settings: the config dataclass (the one declaration of its fields) and its checks.

The model (`mixedae.py`) reads like the paper; what can be set, and what the paper does not
give (marked `ours`), is declared here.
"""
import dataclasses
from typing import Any, ClassVar, Dict, List, Tuple

from mixmae_jax.networks import vit
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.layers import TOP_K_METHODS

NAME = 'mixedae'
DEFAULT_ENCODER = 'vit'
HOMOLOGOUS_ATTENTION = ('topk', 'off', 'oracle')
SEGMENT_SCOPES = ('input', 'qk', 'none')
CONTRASTIVE_TARGETS = ('features', 'attention')
CONTRASTIVE_HEADS = ('none', 'mlp')
MIXING_MODES = ('compose', 'full')


@dataclasses.dataclass(frozen=True)
class MixedAEConfig:
  """MixedAE pretraining model: MAE's ViT and decoder, and the mixing and recognition settings."""
  objective: ClassVar[str] = NAME
  encoder: Any = vit.ViTConfig()
  decoder: DecoderConfig = DecoderConfig(norm_eps=1e-6)
  mask_ratio: float = 0.75  # S = 1 / (1 - mask_ratio) images per mixed sample
  norm_pix_loss: bool = True
  segment_scope: str = 'input'  # 'input' (the paper), 'qk' (ours) or 'none'
  homologous_attention: str = 'topk'  # 'topk', 'off' (naive mixing) or 'oracle' (same image)
  topk_keys: int = 0  # K; 0: L / S (ours)
  topk_blocks: Tuple[int, ...] = ()  # encoder blocks with homologous attention; (): all (ours)
  topk_method: str = 'threshold'  # 'threshold' or 'top_k' (see layers.AttentionModifier)
  contrastive_weight: float = 1.0  # ours; 0 turns the loss off
  contrastive_temperature: float = 0.25  # ours; features only (scores keep the attention's)
  contrastive_target: str = 'features'  # 'features' (the paper) or 'attention' (ours)
  contrastive_head: str = 'none'  # 'none' (the paper) or 'mlp' (ours)
  contrastive_head_dims: Tuple[int, int] = (512, 128)  # the mlp head's hidden and output widths
  mixing_mode: str = 'compose'  # 'compose': B / S mixed samples; 'full': B (ours)

  @property
  def num_sources(self) -> int:
    """S: images per mixed sample, 1 / (1 - mask_ratio) rounded (4 at 0.75)."""
    return int(round(1.0 / (1.0 - self.mask_ratio)))

  @property
  def share(self) -> int:
    """Positions each image supplies: L / S (MAE's visible count)."""
    return self.encoder.num_patches // self.num_sources

  @property
  def sequence_length(self) -> int:
    """Tokens of a mixed sample: S cls tokens and L patches."""
    return self.num_sources + self.encoder.num_patches

  @property
  def num_keys(self) -> int:
    """K of homologous attention."""
    return self.topk_keys or self.share

  @property
  def homologous_blocks(self) -> Tuple[int, ...]:
    return tuple(self.topk_blocks) or tuple(range(self.encoder.depth))

  @property
  def samples_per_group(self) -> int:
    """Mixed samples made of each group of S images: 1 ('compose') or S ('full')."""
    return self.num_sources if self.mixing_mode == 'full' else 1

  @property
  def uses_head(self) -> bool:
    return self.contrastive_weight > 0 and self.contrastive_head == 'mlp'

  def problems(self) -> List[str]:
    if self.encoder.name != 'vit':
      return [f'encoder.name={self.encoder.name!r}: MixedAE mixes the patches of a plain ViT; '
              f'use vit.']
    out = ['encoder.' + p for p in self.encoder.problems()]
    out += ['objective.' + p for p in self.decoder.problems()]
    if out:
      return out
    return self._mixing_problems() + self._recognition_problems()

  def _mixing_problems(self) -> List[str]:
    r, length = self.mask_ratio, self.encoder.num_patches
    if not 0.0 < r < 1.0 or abs(1.0 / (1.0 - r) - self.num_sources) > 1e-6 or \
        self.num_sources < 2:
      return [f'objective.mask_ratio={r}: MixedAE mixes 1 / (1 - mask_ratio) images, which must '
              f'be a whole number >= 2 (0.75 mixes 4, 0.5 mixes 2).']
    if length % self.num_sources:
      return [f'objective.mask_ratio={r} mixes {self.num_sources} images, which must split the '
              f'{length} patches equally: change encoder.img_size or mask_ratio.']
    return []

  def _recognition_problems(self) -> List[str]:
    out = []
    if self.homologous_attention not in HOMOLOGOUS_ATTENTION:
      out.append(f'objective.homologous_attention={self.homologous_attention!r}: use topk, off '
                 f'(naive mixing) or oracle (the same-image mask).')
    if not 0 <= self.topk_keys <= self.sequence_length:
      out.append(f'objective.topk_keys={self.topk_keys} must lie in [1, {self.sequence_length}] '
                 f'(the mixed sequence), or be 0 for L / S = {self.share}.')
    bad = [b for b in self.topk_blocks if not 0 <= b < self.encoder.depth]
    if bad:
      out.append(f'objective.topk_blocks={tuple(self.topk_blocks)}: blocks {bad} do not exist '
                 f'(depth {self.encoder.depth}); () means every block.')
    if self.topk_method not in TOP_K_METHODS:
      out.append(f'objective.topk_method={self.topk_method!r}: use threshold or top_k.')
    if self.contrastive_weight < 0:
      out.append(f'objective.contrastive_weight={self.contrastive_weight} must be >= 0 (0: off).')
    if self.contrastive_temperature <= 0:
      out.append(f'objective.contrastive_temperature={self.contrastive_temperature} must be > 0.')
    if self.contrastive_weight > 0 and self.share < 2:
      out.append(f'objective.contrastive_weight={self.contrastive_weight}: each image supplies '
                 f'{self.share} patch, so no patch has a positive; set it to 0.')
    return out + self._option_problems()

  def _option_problems(self) -> List[str]:
    out = [f'objective.{name}={value!r}: use one of {", ".join(allowed)}.'
           for name, value, allowed in (('segment_scope', self.segment_scope, SEGMENT_SCOPES),
                                        ('contrastive_target', self.contrastive_target,
                                         CONTRASTIVE_TARGETS),
                                        ('contrastive_head', self.contrastive_head,
                                         CONTRASTIVE_HEADS),
                                        ('mixing_mode', self.mixing_mode, MIXING_MODES))
           if value not in allowed]
    topk = self.homologous_attention == 'topk'
    if self.segment_scope == 'qk' and not topk:
      out.append("objective.segment_scope='qk' adds the segment embeddings to the TopK blocks' "
                 "queries and keys: it needs homologous_attention='topk'.")
    if self.contrastive_target == 'attention' and not topk:
      out.append("objective.contrastive_target='attention' trains the TopK blocks' scores: it "
                 "needs homologous_attention='topk'.")
    if self.contrastive_target == 'attention' and self.contrastive_head != 'none':
      out.append("objective.contrastive_head projects features; with contrastive_target="
                 "'attention' the loss reads scores: set contrastive_head='none'.")
    dims = tuple(self.contrastive_head_dims)
    if len(dims) != 2 or min(dims) < 1:
      out.append(f'objective.contrastive_head_dims={dims}: two positive widths (hidden, out).')
    return out


Config = MixedAEConfig


# Named variants (`model.objective` changes): the paper's ablations and our options. Recipes take
# them as config arguments (`mixedae_vit_base_800ep.py:naive`), the CIFAR-10 study as its rows.
VARIANTS = {
    'no_segments': dict(segment_scope='none'),
    'segments_qk': dict(segment_scope='qk'),
    'head_mlp': dict(contrastive_head='mlp'),
    'target_attention': dict(contrastive_target='attention'),
    'full_mixing': dict(mixing_mode='full'),
    'attention_off': dict(homologous_attention='off'),
    'attention_oracle': dict(homologous_attention='oracle'),
    'no_contrastive': dict(contrastive_weight=0.0),
    'naive': dict(segment_scope='none', homologous_attention='off', contrastive_weight=0.0),
    'top_k': dict(topk_method='top_k'),
}

RUNLOCAL = dict(decoder_dim=64, decoder_depth=1, decoder_num_heads=2)


def upgrade_record(record: Dict[str, Any]) -> Dict[str, Any]:
  """An architecture record written before `segment_scope` replaced the bool
  `segment_embeddings` (True: 'input', False: 'none')."""
  record = dict(record)
  if 'segment_embeddings' in record:
    record['segment_scope'] = 'input' if record.pop('segment_embeddings') else 'none'
  return record
