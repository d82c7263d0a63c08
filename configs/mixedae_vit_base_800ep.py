"""MixedAE ViT-B/16 at 224 on ImageNet-1K (TFDS imagenet2012), on MAE's 800-epoch schedule.

MAE's recipe (batch 4096, AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 x batch / 256, 40 warmup epochs,
cosine to 0, RandomResizedCrop(224, 0.2-1) + flip, norm-pix, decoder 512 wide, 8 blocks) with
MixedAE's three components on. Ours, where the paper's text gives no value:
4 images per mixed sequence (1 / (1 - 0.75)), TopK K = L / 4 = 49 in every encoder block,
contrastive temperature 0.25 and weight 1.0, one cls token per image.
  python -m mixmae_jax.train --config=configs/mixedae_vit_base_800ep.py --workdir=DIR \
      --config.data.tfds_manual_dir=/path/to/imagenet_tars

The config argument (after ':', comma-separated) switches components off for ablations, or
turns on the options of ours that the CIFAR-10 study compares:
  no_segments     model.objective.segment_scope=none
  segments_qk     model.objective.segment_scope=qk (only the TopK blocks' queries and keys)
  head_mlp        model.objective.contrastive_head=mlp (a projector before the loss)
  target_attention  model.objective.contrastive_target=attention (the loss on TopK's scores)
  full_mixing     model.objective.mixing_mode=full (S mixed samples per group of S images)
  attention_off   model.objective.homologous_attention=off (every query sees every key)
  attention_oracle  model.objective.homologous_attention=oracle (the same-image mask)
  no_contrastive  model.objective.contrastive_weight=0
  naive           all three off: naive mixing
  top_k           model.objective.topk_method=top_k (TopK by lax.top_k indices and a gather)
  runlocal        a toy-size smoke run of the same recipe on a CPU
e.g. --config=configs/mixedae_vit_base_800ep.py:naive,runlocal
"""
from mixmae_jax.cli.config_args import words
from mixmae_jax.objectives.mixedae_config import VARIANTS as SWITCHES  # the list above
from mixmae_jax.training.config_defaults import pretraining_config, shrink_for_local_run


ARGS = ('runlocal',) + tuple(SWITCHES)


def get_config(arg=None):
  args = words(arg, ARGS, __file__)
  c = pretraining_config('mixedae', 'vit', 'base')  # logging, checkpoints, data plumbing
  # the encoder
  c.model.encoder.update(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
  # the method
  c.model.objective.update(decoder_dim=512, decoder_depth=8, decoder_num_heads=16, mask_ratio=0.75,
                           norm_pix_loss=True, segment_scope='input', homologous_attention='topk',
                           topk_keys=0, topk_blocks=(), topk_method='threshold',
                           contrastive_weight=1.0, contrastive_temperature=0.25,
                           contrastive_target='features', contrastive_head='none',
                           contrastive_head_dims=(512, 128), mixing_mode='compose')
  # ImageNet-1K; RandomResizedCrop(scale) + flip
  c.data.update(tfds_name='imagenet2012', crop_scale=(0.2, 1.0), hflip=True)
  # batch, schedule (lr = base_lr x batch / 256) and AdamW
  c.update(batch_size=4096, num_epochs=800, warmup_epochs=40, base_lr=1.5e-4, min_lr=0.0,
           lr_schedule='cosine', weight_decay=0.05, adam_b1=0.9, adam_b2=0.95, grad_clip_norm=0.0)
  for word in sorted(args & set(SWITCHES), key=list(SWITCHES).index):
    c.model.objective.update(SWITCHES[word])
  return shrink_for_local_run(c) if 'runlocal' in args else c
