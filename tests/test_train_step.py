"""The pmapped train step on 8 fake CPU devices: it learns, stays in sync, draws per device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixmae_jax.objectives import mixing
from mixmae_jax.training import parallel
from mixmae_jax.networks.decoder import DecoderConfig
from mixmae_jax.networks.swin import config as swin_config
from mixmae_jax.objectives.mixmae import MixMAE, MixMAEConfig
from mixmae_jax.training.optimizer import adamw, warmup_cosine_schedule
from mixmae_jax.training.train_step import device_key, init_train_state, make_train_step

ARCH = MixMAEConfig(
    encoder=swin_config('tiny', img_size=64, embed_dim=16, depths=(1, 1, 1, 1),
                        num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 4, 2)),
    decoder=DecoderConfig(dim=32, depth=1, num_heads=4))


def _setup(grad_accum_steps=1, lr=3e-3):
  model = MixMAE(ARCH)
  schedule = warmup_cosine_schedule(lr, 2, 100)
  tx = adamw(schedule, weight_decay=0.05, b1=0.9, b2=0.95)
  state = jax.jit(lambda: init_train_state(model, tx, jax.random.PRNGKey(0), 64))()
  step = parallel.data_parallel(make_train_step(
      model, tx, schedule, pixel_mean=(0.5,) * 3, pixel_std=(0.25,) * 3,
      grad_accum_steps=grad_accum_steps))
  return parallel.replicate(state), step


def _images(n, seed=0, size=64):
  """Random plane waves, uint8: each patch is a smooth ramp, learnable from few steps."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing='ij')
  freq = rng.uniform(0.5, 1.5, size=(n, 1, 1, 3, 2))
  phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 3))
  arg = 2 * np.pi * (freq[..., 0] * yy[None, :, :, None] + freq[..., 1] * xx[None, :, :, None])
  return np.round(127.5 + 127.5 * np.sin(arg + phase)).astype(np.uint8)


@pytest.mark.parametrize('grad_accum_steps', [1, 2])
def test_pmapped_step_over_8_devices_lowers_the_loss(grad_accum_steps):
  assert jax.local_device_count() == 8
  state, step = _setup(grad_accum_steps)
  batch = parallel.shard({'image': _images(32)})
  rng = parallel.replicate(jax.random.PRNGKey(0))
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics['loss'][0]))
  assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3]), losses
  # gradients are averaged over devices, so every replica holds the same parameters
  leaves = jax.tree.leaves(state.params)
  for leaf in leaves[:5]:
    np.testing.assert_array_equal(leaf[0], leaf[7])
  assert int(state.step[0]) == 30
  assert np.all(np.asarray(metrics['loss']) == np.asarray(metrics['loss'])[0])


def test_each_device_and_step_draws_its_own_mask():
  draw = jax.pmap(lambda base, step: mixing.draw_mask(
      jax.random.fold_in(device_key(base, step), 0), 7, 0.5), axis_name='batch')
  base = parallel.replicate(jax.random.PRNGKey(0))
  masks = [np.asarray(draw(base, jnp.full((8,), s))) for s in (0, 1)]
  flat = {tuple(m.ravel()) for ms in masks for m in ms}
  assert len(flat) == 16  # 8 devices x 2 steps, all different
  again = np.asarray(draw(base, jnp.full((8,), 0)))
  np.testing.assert_array_equal(again, masks[0])  # a function of (seed, step, device) alone
