"""Every published release of the five methods' families, by name: where it lives, what the
official file is called, which converter reads it, what it holds and what it scored.

`source` is one of
- `url`: a direct download link;
- `gdrive`: a Google Drive file id (the MixMIM, UM-MAE and SimMIM releases live there);
- `hf`: `repo_id/filename` on the Hugging Face Hub (safetensors, read without PyTorch).

`file_name` is the name the cache keeps the official file under, and the name under which a file
downloaded by hand is picked up (`$MIXMAE_JAX_CACHE/<file_name>`). `sha256` is recorded where
it is known; otherwise the first file seen is pinned and every later use is checked against it.
MixedAE has no published weights (no official code exists).
"""
import dataclasses
from typing import Dict, Mapping, Optional

DRIVE = 'https://drive.google.com/file/d/{}/view'


@dataclasses.dataclass(frozen=True)
class Release:
  name: str
  source: str  # 'url' | 'gdrive' | 'hf'
  location: str  # the URL, the Drive file id, or `repo_id/filename` on the Hub
  file_name: str
  arch: str  # the `mixmae-convert --arch` that reads it
  holds: str  # 'pretraining' (encoder and decoder) | 'encoder' | 'classifier'
  published: str  # what the release scored, as its authors report it
  sha256: Optional[str] = None
  options: Mapping[str, object] = dataclasses.field(default_factory=dict)  # converter options

  @property
  def address(self) -> str:
    """Where a person would download it by hand."""
    if self.source == 'gdrive':
      return DRIVE.format(self.location)
    if self.source == 'hf':
      repo, _, file_name = self.location.rpartition('/')
      return f'https://huggingface.co/{repo}/blob/main/{file_name}'
    return self.location


def _mae(size: str, patch: int, kind: str, file_name: str, published: str, **kw) -> Release:
  folder = {'pretraining': 'pretrain', 'encoder': 'pretrain', 'classifier': 'finetune'}[kind]
  suffix = {'pretraining': '', 'encoder': '_encoder', 'classifier': '_finetuned'}[kind]
  return Release(f'mae_vit_{size}_patch{patch}{suffix}', 'url',
                 f'https://dl.fbaipublicfiles.com/mae/{folder}/{file_name}', file_name,
                 f'mae_vit_{size}_patch{patch}', kind, published, **kw)


RELEASES: Dict[str, Release] = {r.name: r for r in [
    # MixMAE (Sense-X/MixMIM): Swin-B/W14 and Swin-L/W14, 600 epochs
    Release('mixmim_base_600ep', 'gdrive', '1pZYmTv08xK_kOe2kk6ahuvgJVkHm-ZIa',
            'mixmim_base_600ep.pth', 'mixmim_base', 'pretraining',
            'IN-1k top-1 85.1 after fine-tuning'),
    Release('mixmim_base_600ep_finetuned', 'gdrive', '1zkOyh8jnFW7iYG3sOfp6LLG5wu4VbiXb',
            'mixmim_base_600ep_ft.pth', 'mixmim_base', 'classifier', 'IN-1k top-1 85.1'),
    Release('mixmim_large_600ep', 'gdrive', '1dM8Lu2nVEukxPwn7PLmDmRAYwQV59ttx',
            'mixmim_large_600ep.pth', 'mixmim_large', 'pretraining',
            'IN-1k top-1 85.9 after fine-tuning'),
    Release('mixmim_large_600ep_finetuned', 'gdrive', '1b1BxGAewK1ICxxCEwF24YEDSjlQ9Ts9n',
            'mixmim_large_600ep_ft.pth', 'mixmim_large', 'classifier', 'IN-1k top-1 85.9'),
    # MAE (facebookresearch/mae): with the decoder, encoder only, fine-tuned
    _mae('base', 16, 'pretraining', 'mae_pretrain_vit_base_full.pth',
         'IN-1k top-1 83.6 after fine-tuning, 68.0 linear probe'),
    _mae('large', 16, 'pretraining', 'mae_pretrain_vit_large_full.pth',
         'IN-1k top-1 85.9 after fine-tuning'),
    _mae('base', 16, 'encoder', 'mae_pretrain_vit_base.pth',
         'IN-1k top-1 83.6 after fine-tuning, 68.0 linear probe'),
    _mae('large', 16, 'encoder', 'mae_pretrain_vit_large.pth',
         'IN-1k top-1 85.9 after fine-tuning'),
    _mae('huge', 14, 'encoder', 'mae_pretrain_vit_huge.pth', 'IN-1k top-1 86.9 after fine-tuning'),
    _mae('base', 16, 'classifier', 'mae_finetuned_vit_base.pth', 'IN-1k top-1 83.6'),
    _mae('large', 16, 'classifier', 'mae_finetuned_vit_large.pth', 'IN-1k top-1 85.9'),
    _mae('huge', 14, 'classifier', 'mae_finetuned_vit_huge.pth', 'IN-1k top-1 86.9'),
    # The MAE encoders as timm publishes them on the Hub: safetensors, no PyTorch needed
    Release('mae_vit_base_patch16_hf', 'hf', 'timm/vit_base_patch16_224.mae/model.safetensors',
            'vit_base_patch16_224.mae.safetensors', 'mae_vit_base_patch16', 'encoder',
            'IN-1k top-1 83.6 after fine-tuning, 68.0 linear probe'),
    Release('mae_vit_large_patch16_hf', 'hf', 'timm/vit_large_patch16_224.mae/model.safetensors',
            'vit_large_patch16_224.mae.safetensors', 'mae_vit_large_patch16', 'encoder',
            'IN-1k top-1 85.9 after fine-tuning'),
    Release('mae_vit_huge_patch14_hf', 'hf', 'timm/vit_huge_patch14_224.mae/model.safetensors',
            'vit_huge_patch14_224.mae.safetensors', 'mae_vit_huge_patch14', 'encoder',
            'IN-1k top-1 86.9 after fine-tuning'),
    # UM-MAE (implus/UM-MAE): 200 epochs of UM-MAE, fine-tuned 100 epochs at 256 px
    Release('ummae_swin_tiny_256_finetuned', 'gdrive', '1VPUSNljE3orSl-d6vMBo5jtvYeEipZu2',
            'finetune_mae_swin_tiny_256_mask_vmr025_200e_100e.pth', 'ummae_swin_tiny',
            'classifier', 'IN-1k top-1 82.04', options={'img_size': 256}),
    Release('ummae_pvt_small_256_finetuned', 'gdrive', '1wKBsh-G9knebYgcv4Lv5UnQQkCrnqkpH',
            'finetune_mae_pvt_small_256_mask_vmr025_200e_100e.pth', 'ummae_pvt_small',
            'classifier', 'IN-1k top-1 79.31', options={'img_size': 256}),
    # SimMIM (microsoft/SimMIM): Swin-B and Swin-L pretrained at 192 px
    Release('simmim_swin_base_192_100ep', 'gdrive', '1Wcbr66JL26FF30Kip9fZa_0lXrDAKP-d',
            'simmim_pretrain__swin_base__img192_window6__100ep.pth', 'simmim_swin_base',
            'pretraining', 'IN-1k top-1 83.5 after fine-tuning at 224'),
    Release('simmim_swin_base_192_800ep', 'gdrive', '15zENvGjHlM71uKQ3d2FbljWPubtrPtjl',
            'simmim_pretrain__swin_base__img192_window6__800ep.pth', 'simmim_swin_base',
            'pretraining', 'IN-1k top-1 84.0 after fine-tuning at 224'),
    Release('simmim_swin_large_192_800ep', 'gdrive', '1qDxrTl2YUDB0505_4QrU5LU2R1kKmcBP',
            'simmim_pretrain__swin_large__img192_window12__800ep.pth', 'simmim_swin_large',
            'pretraining', 'IN-1k top-1 85.4 after fine-tuning at 224'),
    Release('simmim_swin_base_224_100ep_finetuned', 'gdrive',
            '1mb43BkW56F5smwiX-g7QUUD7f1Rftq8u',
            'simmim_finetune__swin_base__img224_window7__100ep.pth', 'simmim_swin_base',
            'classifier', 'IN-1k top-1 83.5'),
    Release('simmim_swin_base_224_800ep_finetuned', 'gdrive',
            '1xEKyfMTsdh6TfnYhk5vbw0Yz7a-viZ0w',
            'simmim_finetune__swin_base__img224_window7__800ep.pth', 'simmim_swin_base',
            'classifier', 'IN-1k top-1 84.0'),
    Release('simmim_swin_large_224_800ep_finetuned', 'gdrive',
            '1mf0ZpXttEvFsH87Www4oQ-t8Kwr0x485',
            'simmim_finetune__swin_large__img224_window14__800ep.pth', 'simmim_swin_large',
            'classifier', 'IN-1k top-1 85.4'),
]}
