"""Weight-decay mask and the per-step learning-rate schedule of the recipe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.swin import config as swin_config
from mixmae_jax.networks import vit
from mixmae_jax.objectives import mae
from mixmae_jax.objectives.mixmae import NO_WEIGHT_DECAY, MixMAE, MixMAEConfig
from mixmae_jax.training.optimizer import (scaled_learning_rate, warmup_cosine_schedule,
                                           weight_decay_mask)


def _tiny_params():
  arch = MixMAEConfig(encoder=swin_config('tiny', img_size=64, embed_dim=16, depths=(1, 1, 1, 1),
                                          num_heads=(1, 1, 2, 2), window_sizes=(4, 4, 4, 2)),
                      decoder=DecoderConfig(dim=32, depth=1, num_heads=2), mix_embedding=True)
  return jax.eval_shape(lambda: MixMAE(arch).init(
      {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(1)},
      jnp.zeros((2, 64, 64, 3))))['params']


def test_weight_decay_mask_follows_the_official_groups():
  mask = weight_decay_mask(_tiny_params(), NO_WEIGHT_DECAY)
  block = mask['layers_0']['blocks_0']
  assert block['attn']['qkv']['kernel'] and block['mlp']['fc1']['kernel']
  assert block['attn']['relative_position_bias_table']  # 2-D: decayed in the official code
  assert not block['attn']['qkv']['bias'] and not block['norm1']['scale']
  assert mask['patch_embed']['proj']['kernel'] and not mask['patch_embed']['proj']['bias']
  assert not mask['mask_token'] and not mask['mix_embed']
  assert not mask['layers_0']['downsample']['norm']['scale']
  assert mask['layers_0']['downsample']['reduction']['kernel']


def test_mae_decays_its_tokens_as_the_official_code_does():
  """timm's param groups in MAE exempt only 1-D params: cls and mask tokens are decayed."""
  arch = mae.MAEConfig(encoder=vit.config('tiny', img_size=32, depth=1),
                       decoder=DecoderConfig(dim=32, depth=1, num_heads=2))
  params = jax.eval_shape(lambda: mae.MAE(arch).init(
      {'params': jax.random.PRNGKey(0), 'mask': jax.random.PRNGKey(1)},
      jnp.zeros((2, 32, 32, 3))))['params']
  mask = weight_decay_mask(params, mae.NO_WEIGHT_DECAY)
  assert mask['cls_token'] and mask['mask_token'] and 'pos_embed' not in mask
  assert not mask['blocks_0']['norm1']['scale'] and mask['decoder_pred']['kernel']


def test_schedule_warms_up_linearly_then_follows_a_half_cosine():
  peak = scaled_learning_rate(1.5e-4, 2048)
  assert peak == pytest.approx(1.2e-3)
  sched = warmup_cosine_schedule(peak, warmup_steps=40, total_steps=140, min_lr=1e-5)
  assert float(sched(0)) == 0.0
  assert float(sched(20)) == pytest.approx(peak / 2, rel=1e-5)
  assert float(sched(40)) == pytest.approx(peak, rel=1e-5)
  assert float(sched(90)) == pytest.approx((peak + 1e-5) / 2, rel=1e-4)
  assert float(sched(140)) == pytest.approx(1e-5, rel=1e-4)
  t = np.arange(40, 141)
  official = 1e-5 + (peak - 1e-5) * 0.5 * (1 + np.cos(np.pi * (t - 40) / 100))
  np.testing.assert_allclose([float(sched(s)) for s in t], official, rtol=1e-4)
