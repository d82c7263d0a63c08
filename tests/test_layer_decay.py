"""Layer-wise lr decay: the official MixMIM and MAE layer ids and scales, and what the optimizer
does with them."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixmae_jax.evaluation.layer_decay import (layer_decayed_adamw, layer_labels, layer_scale,
                                               layer_scales)
from mixmae_jax.networks import swin, vit
from mixmae_jax.networks.classifier import Classifier, ClassifierConfig

DEPTHS = (1, 2, 1, 1)  # sum 5: ids 0..5
ENCODER = swin.config('tiny', img_size=64, embed_dim=16, depths=DEPTHS, num_heads=(1, 2, 2, 4),
                      window_sizes=(4, 4, 4, 2))
VIT = vit.config('tiny', img_size=32, embed_dim=16, depth=3, num_heads=2, pos_embed='learned')


def _params(encoder=ENCODER):
  arch = ClassifierConfig(encoder, 10)
  size = encoder.img_size
  return jax.jit(Classifier(arch).init)(jax.random.PRNGKey(0),
                                        jnp.zeros((2, size, size, 3)))['params']


def _official_layer_id(name: str, num_layers) -> int:
  """util/lr_decay.py's get_layer_id_for_mixmim, restated on dotted PyTorch names."""
  if name.startswith('patch_embed'):
    return 0
  if name.startswith('layers'):
    stage = int(name.split('.')[1])
    if 'downsample' in name:
      return sum(num_layers[:stage + 1]) + 1
    return sum(num_layers[:stage]) + int(name.split('.')[3]) + 1
  return sum(num_layers)


@pytest.mark.parametrize('depths', [DEPTHS, (2, 2, 18, 2)])
def test_layer_ids_match_the_official_rule(depths):
  for names in [('patch_embed', 'proj', 'kernel'), ('norm', 'scale'), ('head', 'bias')] + [
      (f'layers_{s}', f'blocks_{j}', 'attn', 'qkv', 'kernel') for s in range(4)
      for j in range(depths[s])] + [(f'layers_{s}', 'downsample', 'norm', 'scale')
                                    for s in range(3)]:
    torch_name = '.'.join(n.replace('layers_', 'layers.').replace('blocks_', 'blocks.')
                          for n in names)
    encoder = swin.config('base', depths=depths)
    assert swin.layer_id(names, encoder) == _official_layer_id(torch_name, depths), names


def test_each_group_has_its_pinned_scale():
  scales = layer_scales(_params(), ENCODER, 0.7)
  expected = {  # decay ** (sum(depths) + 1 - id), sum(depths) = 5
      ('patch_embed',): 0.7**6,
      ('layers_0', 'blocks_0'): 0.7**5,  # id 1
      ('layers_0', 'downsample'): 0.7**4,  # id 2: the next stage's first block
      ('layers_1', 'blocks_0'): 0.7**4,  # id 2
      ('layers_1', 'blocks_1'): 0.7**3,  # id 3
      ('layers_1', 'downsample'): 0.7**2,  # id 4
      ('layers_2', 'blocks_0'): 0.7**2,  # id 4
      ('layers_2', 'downsample'): 0.7**1,  # id 5
      ('layers_3', 'blocks_0'): 0.7**1,  # id 5, the last block
      ('norm',): 0.7**1,  # id 5 = sum(depths): the official "else" branch
      ('head',): 0.7**1,
  }
  seen = set()
  for path, scale in jax.tree_util.tree_flatten_with_path(scales)[0]:
    names = tuple(k.key for k in path)
    key = names[:2] if names[0].startswith('layers_') else names[:1]
    assert scale == pytest.approx(expected[key]), names
    seen.add(key)
  assert seen == set(expected)
  assert layer_scale(0, swin.num_layer_ids(swin.config('base')), 0.7) == pytest.approx(0.7**25)


def test_vit_ids_and_scales_are_maes():
  """MAE's get_layer_id_for_vit: cls_token, pos_embed, patch_embed 0; blocks.i i + 1; the rest
  (fc_norm, head) depth + 1, scale 1; no weight decay on pos_embed and cls_token."""
  params = _params(VIT)
  scales = layer_scales(params, VIT, 0.65)
  flat = {tuple(k.key for k in path): s
          for path, s in jax.tree_util.tree_flatten_with_path(scales)[0]}
  want = {'cls_token': 0.65**4, 'pos_embed': 0.65**4, 'patch_embed': 0.65**4,
          'blocks_0': 0.65**3, 'blocks_2': 0.65**1, 'fc_norm': 1.0, 'head': 1.0}
  for names, scale in flat.items():
    if names[0] in want:
      assert scale == pytest.approx(want[names[0]]), names
  assert {n[0] for n in flat} >= set(want) and 'norm' not in {n[0] for n in flat}
  tx = layer_decayed_adamw(lambda step: 0.1, params, VIT, layer_decay=0.65, weight_decay=0.05,
                           b1=0.9, b2=0.999)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert not np.any(np.asarray(updates['pos_embed'])) and not np.any(updates['cls_token'])
  assert np.any(np.asarray(updates['blocks_0']['attn']['qkv']['kernel']))  # decayed


def test_the_optimizer_scales_the_whole_adamw_step_decay_included():
  params = _params()
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.01), params)
  lr, wd = 0.1, 0.05
  tx = layer_decayed_adamw(lambda step: lr, params, ENCODER, layer_decay=0.7, weight_decay=wd,
                           b1=0.9, b2=0.999)
  updates, _ = tx.update(grads, tx.init(params), params)
  scales = layer_scales(params, ENCODER, 0.7)
  # First Adam step: direction g / (|g| + eps) = 1 - tiny; decoupled decay on >= 2-D weights.
  for (path, u), p, s in zip(jax.tree_util.tree_flatten_with_path(updates)[0],
                             jax.tree.leaves(params), jax.tree.leaves(scales)):
    direction = 0.01 / (0.01 + 1e-8)
    expected = -lr * s * (direction + (wd * np.asarray(p) if p.ndim > 1 else 0.0))
    np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-9,
                               err_msg=jax.tree_util.keystr(path))


def test_decay_one_is_plain_adamw():
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  plain = optax.adamw(0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05,
                      mask=lambda t: jax.tree.map(lambda x: x.ndim > 1, t))
  ours = layer_decayed_adamw(lambda step: 0.1, params, ENCODER, layer_decay=1.0,
                             weight_decay=0.05, b1=0.9, b2=0.999)
  a, _ = plain.update(grads, plain.init(params), params)
  b, _ = ours.update(grads, ours.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6)
  assert set(jax.tree.leaves(layer_labels(params, ENCODER))) == {f'layer_{i}' for i in range(6)}
