"""What `mixmae_jax.load` returns: the (model, params) pair, with the notebook methods on it.

  m = mixmae_jax.load('mae_vit_base_patch16')   # a published name, or any checkpoint path
  x = m.preprocess(images)                      # PIL images / uint8 arrays -> normalized batch
  f = m.features(x)                             # [B, F] pooled; tokens=True: the last layer's
  r = m.reconstruct(x)                          # originals, inputs, predictions, masks
  m.show(x)                                     # the training pictures' labelled grid (PIL)

It is still the tuple it always was (`model, params = mixmae_jax.load(path)`), for every encoder
family and every kind of checkpoint (pretraining, encoder only, classifier).
"""
from typing import Any, Dict, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mixmae_jax import architectures, networks, objectives
from mixmae_jax.data import pixels
from mixmae_jax.training.pictures import grid

# ImageNet evaluation's resize: the shorter side to size / 0.875 (256 for 224), then the centre.
CROP_PCT = 0.875
DEFAULT_MASK_SEED = 0


def _as_uint8_batch(images) -> np.ndarray:
  """PIL image(s) or arrays ([H, W, 3] or [B, H, W, 3], uint8 or floats in 0-1) -> uint8."""
  if isinstance(images, Image.Image):
    return np.asarray(images.convert('RGB'))[None]
  if isinstance(images, (list, tuple)):
    return np.stack([_as_uint8_batch(im)[0] for im in images])
  array = np.asarray(images)
  if array.ndim == 3:
    array = array[None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f'images of shape {array.shape}: give PIL images or arrays [H, W, 3] / '
                     f'[B, H, W, 3] (uint8, or floats in 0-1).')
  if array.dtype != np.uint8:
    array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return array[..., :3]


def resize_and_crop(image: np.ndarray, size: int, crop_pct: float = CROP_PCT) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3]: the shorter side to size / crop_pct (bicubic), the
  centre crop."""
  h, w = image.shape[:2]
  short = int(round(size / crop_pct))
  scale = short / min(h, w)
  resized = Image.fromarray(image).resize((max(size, round(w * scale)),
                                           max(size, round(h * scale))), Image.BICUBIC)
  top, left = (resized.height - size) // 2, (resized.width - size) // 2
  return np.asarray(resized.crop((left, top, left + size, top + size)))


class Pretrained(tuple):
  """(model, params) of a checkpoint, with `preprocess`, `features`, `reconstruct`, `show`."""

  def __new__(cls, model, params, source: str = ''):
    loaded = super().__new__(cls, (model, params))
    loaded.source = source
    return loaded

  model = property(lambda self: self[0])
  params = property(lambda self: self[1])
  arch = property(lambda self: self[0].config)
  kind = property(lambda self: architectures.kind(self.arch))

  @property
  def encoder_config(self):
    return self.arch if self.kind == 'encoder' else self.arch.encoder

  @property
  def input_size(self) -> int:
    return self.encoder_config.img_size

  def __repr__(self) -> str:
    name = self.arch.objective if self.kind == 'pretraining' else self.kind
    return (f'<mixmae_jax {name} {self.encoder_config.name} at {self.input_size} px'
            f'{" from " + self.source if self.source else ""}>')

  def preprocess(self, images, mean: Sequence[float] = pixels.IMAGENET_MEAN,
                 std: Sequence[float] = pixels.IMAGENET_STD,
                 crop_pct: float = CROP_PCT) -> jax.Array:
    """PIL images, or uint8 / 0-1 float arrays of any size -> normalized float32
    [B, S, S, 3] at this encoder's input size S (resize, centre crop, ImageNet statistics)."""
    batch = _as_uint8_batch(images)
    batch = np.stack([resize_and_crop(im, self.input_size, crop_pct) for im in batch])
    return pixels.normalize(batch, mean, std)

  def _check(self, images) -> jax.Array:
    images = jnp.asarray(images)
    s = self.input_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
      raise ValueError(
          f'this {self.encoder_config.name} encoder takes normalized [B, {s}, {s}, 3] images, '
          f'got {tuple(images.shape)}: pass them through .preprocess(images) (resize, crop, '
          f'normalize); to use another input size, fine-tune at it (mixmae-finetune with '
          f'model.encoder.img_size, which adapts the position tables).')
    if images.dtype == jnp.uint8:
      raise ValueError('got uint8 pixels: pass them through .preprocess(images) first.')
    return images

  def _encoder(self):
    """(encoder module, its params)."""
    encoder = self.encoder_config
    module = networks.encoder_module(encoder.name)
    params = {k: v for k, v in self.params.items() if module.is_encoder_param(k)}
    # a family whose features need params a checkpoint may lack says what it gives instead
    encoder = getattr(module, 'features_config', lambda c, names: c)(encoder, set(params))
    return module.Encoder(encoder), params

  def features(self, images, tokens: bool = False) -> jax.Array:
    """The encoder's features of normalized images: pooled [B, F] (what a classifier head
    reads), or with `tokens` its last layer as the encoder gives it ([B, g, g, F] for a Swin,
    [B, 1 + L, D] for a ViT)."""
    images = self._check(images)
    encoder, params = self._encoder()
    return encoder.apply({'params': params}, images, method=None if tokens else 'features')

  def reconstruct(self, images, mask=None, rng: Union[int, jax.Array] = DEFAULT_MASK_SEED
                  ) -> Dict[str, np.ndarray]:
    """The pretraining model on normalized images: {'originals', 'inputs', 'predictions'
    (normalized [B, H, W, 3] each), 'masks' (the objective's mask), 'loss'}. Without `mask`,
    one is drawn from `rng` (an int seed or a PRNG key; the same seed, the same mask)."""
    if self.kind != 'pretraining':
      raise ValueError(f'this checkpoint holds a {self.kind}, not a pretraining model with its '
                       f'decoder: reconstruct needs one (e.g. mae_vit_base_patch16, '
                       f'mixmim_base_600ep).')
    out, _, columns = self._run(images, mask, rng)
    return {'originals': columns[0][1], 'inputs': columns[1][1],
            'predictions': columns[2][1], 'masks': np.asarray(out['mask']),
            'loss': float(out['loss'])}

  def _run(self, images, mask, rng):
    images = self._check(images)
    objective = objectives.objective_module(self.arch.objective)
    multiple, why = objective.batch_multiple(self.arch)
    if images.shape[0] % multiple:
      raise ValueError(f'{self.arch.objective} needs a multiple of {multiple} images per call, '
                       f'got {images.shape[0]}: {why}')
    key = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    kwargs: Dict[str, Any] = {} if mask is None else {'mask': jnp.asarray(mask)}
    out = self.model.apply({'params': self.params}, images, rngs={'mask': key}, **kwargs)
    out = jax.tree.map(np.asarray, {k: v for k, v in out.items() if k != 'metrics'})
    order, columns = objective.picture_columns(np.asarray(images), out, self.arch)
    return out, order, columns

  def show(self, images, mask=None, rng: Union[int, jax.Array] = DEFAULT_MASK_SEED,
           mean: Sequence[float] = pixels.IMAGENET_MEAN,
           std: Sequence[float] = pixels.IMAGENET_STD) -> Image.Image:
    """The labelled grid training writes to `reconstructions/`, as a PIL image."""
    _, order, columns = self._run(images, mask, rng)
    return Image.fromarray(grid(columns, order, mean, std))


def wrap(loaded, source: str = '') -> Pretrained:
  model, params = loaded
  return Pretrained(model, params, source)
