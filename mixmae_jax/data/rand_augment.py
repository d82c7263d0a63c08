"""RandAugment as timm's `rand-m9-mstd0.5-inc1`, in TensorFlow ops on one uint8 image.

The policy string reads as in timm: `m` magnitude (0-10 scale), `n` ops per image (2),
`mstd` std of the Gaussian noise added to the magnitude for every op, `mmax` the magnitude's upper
clip (10), `inc1` the op set whose strength increases with the magnitude. Each of the n ops is
drawn uniformly with replacement from the set and applied with probability 1/2; geometric and
`*Increasing` enhancement ops flip the sign of their argument with probability 1/2; pixels uncovered
by rotations, shears and translations take the ImageNet mean colour. The ops follow PIL's
definitions (autocontrast, equalize, posterize, solarize, the ImageEnhance blends with PIL's
greyscale and 3x3 smoothing kernels), rounding to uint8 after each op as PIL does. One documented
difference: geometric ops resample bilinearly (TensorFlow's projective transform has no bicubic
mode; timm uses bicubic when the recipe asks for it).

All randomness comes from a stateless seed, so the same (seed, image) always gives the same
result and a resumed run augments exactly as an uninterrupted one.
"""
import dataclasses
import math
import re
from typing import Callable, Sequence

import tensorflow as tf

from mixmae_jax.data.image_decoding import to_uint8

_LEVEL_DENOM = 10.0
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's 'L' conversion (ITU-R 601-2)
IMAGENET_FILL = (124, 116, 104)  # round(255 * ImageNet mean), timm's fill colour


@dataclasses.dataclass(frozen=True)
class RandAugmentPolicy:
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  magnitude_max: float = 10.0
  increasing: bool = True
  op_prob: float = 0.5

  @property
  def op_names(self) -> Sequence[str]:
    return INCREASING_OPS if self.increasing else STANDARD_OPS


def parse_policy(spec: str) -> RandAugmentPolicy:
  """'rand-m9-mstd0.5-inc1' -> RandAugmentPolicy; a ValueError names what is not understood."""
  parts = spec.split('-')
  if parts[0] != 'rand':
    raise ValueError(f'RandAugment policy {spec!r} must start with "rand-", e.g. '
                     f'"rand-m9-mstd0.5-inc1".')
  fields = dict(magnitude=_LEVEL_DENOM, increasing=False)
  for part in parts[1:]:
    match = re.fullmatch(r'([a-z]+)(\d+(?:\.\d+)?)', part)
    if not match or match.group(1) not in ('m', 'n', 'mstd', 'mmax', 'inc'):
      raise ValueError(f'RandAugment policy {spec!r}: cannot read {part!r}; known sections are '
                       f'm<magnitude>, n<ops>, mstd<std>, mmax<max>, inc<0|1>.')
    key, value = match.group(1), float(match.group(2))
    if key == 'm':
      fields['magnitude'] = value
    elif key == 'n':
      fields['num_ops'] = int(value)
    elif key == 'mstd':
      fields['magnitude_std'] = math.inf if value > 100 else value
    elif key == 'mmax':
      fields['magnitude_max'] = value
    else:
      fields['increasing'] = bool(value)
  fields.setdefault('magnitude_std', 0.0)
  return RandAugmentPolicy(**fields)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """[H, W, 3] float -> [H, W, 1] PIL 'L' values."""
  return tf.round(tf.reduce_sum(image * tf.constant(_GREY_WEIGHTS), axis=-1, keepdims=True))


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL Image.blend: degenerate + factor * (image - degenerate), clipped and truncated."""
  return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _smooth(image: tf.Tensor) -> tf.Tensor:
  """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) inside, the border pixels unchanged."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  inner = tf.round(inner)
  return tf.pad(inner - image[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + image


def _affine(image: tf.Tensor, coeffs: Sequence[tf.Tensor], fill: Sequence[int]) -> tf.Tensor:
  """PIL's Image.transform(AFFINE, (a, b, c, d, e, f)): output (x, y) reads input (ax + by + c,
  dx + ey + f) in PIL's continuous coordinates (pixel centres at +0.5); outside -> `fill`."""
  a, b, c, d, e, f = [tf.cast(v, tf.float32) for v in coeffs]
  # The same map in pixel-index coordinates, which the TF op uses.
  c = a * 0.5 + b * 0.5 + c - 0.5
  f = d * 0.5 + e * 0.5 + f - 0.5
  transform = tf.stack([a, b, c, d, e, f, 0.0, 0.0])[None]
  fill = tf.constant(fill, tf.float32)
  shape = tf.shape(image)[:2]
  # Filling with 0 around (image - fill) and adding fill back gives a per-channel fill colour.
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=(image - fill)[None], transforms=transform, output_shape=shape,
      fill_value=0.0, interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  return tf.round(out + fill)


def _auto_contrast(image, level, sign, fill):
  del level, sign, fill
  x = tf.cast(image, tf.float64)  # PIL builds its lookup table in double precision
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  stretched = tf.floor(tf.clip_by_value(x * scale - lo * scale, 0.0, 255.0))
  return tf.where(hi > lo, tf.cast(stretched, tf.float32), image)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.equalize on one channel [H, W] of integer values."""
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(values, minlength=256, maxlength=256)
  nonzero = tf.boolean_mask(histogram, histogram > 0)
  step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
  before = tf.cumsum(histogram, exclusive=True)
  lut = tf.minimum((step // 2 + before) // tf.maximum(step, 1), 255)
  return tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), channel)


def _equalize(image, level, sign, fill):
  del level, sign, fill
  return tf.stack([_equalize_channel(image[:, :, c]) for c in range(3)], axis=-1)


def _invert(image, level, sign, fill):
  del level, sign, fill
  return 255.0 - image


def _rotate(image, level, sign, fill):
  angle = -sign * level * 30.0 * math.pi / 180.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  h, w = [tf.cast(s, tf.float32) for s in tf.unstack(tf.shape(image)[:2])]
  cx, cy = w / 2.0, h / 2.0  # PIL rotates about the image centre
  return _affine(image, [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy],
                 fill)


def _posterize_bits(image, bits):
  shift = tf.cast(8 - tf.minimum(bits, 8), tf.float32)
  return tf.floor(image / 2.0**shift) * 2.0**shift


def _solarize_at(image, threshold):
  return tf.where(image >= threshold, 255.0 - image, image)


def _solarize_add(image, level, sign, fill):
  del sign, fill
  add = tf.floor(level * 110.0)
  return tf.where(image < 128.0, tf.minimum(image + add, 255.0), image)


def _shear(axis: int) -> Callable:
  def op(image, level, sign, fill):
    f = sign * level * 0.3
    coeffs = [1.0, f, 0.0, 0.0, 1.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0, f, 1.0, 0.0]
    return _affine(image, coeffs, fill)
  return op


def _translate(axis: int) -> Callable:
  def op(image, level, sign, fill):
    size = tf.cast(tf.shape(image)[1 - axis], tf.float32)  # width for x, height for y
    pixels = sign * level * 0.45 * size
    coeffs = [1.0, 0.0, pixels, 0.0, 1.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0, 0.0, 1.0, pixels]
    return _affine(image, coeffs, fill)
  return op


def _increasing_factor(level, sign):
  return tf.maximum(0.1, 1.0 + sign * level * 0.9)


def _enhancer(degenerate: Callable, increasing: bool) -> Callable:
  def op(image, level, sign, fill):
    del fill
    factor = _increasing_factor(level, sign) if increasing else level * 1.8 + 0.1
    return _blend(degenerate(image), image, factor)
  return op


_DEGENERATE = {
    'Color': lambda image: tf.tile(_grey(image), [1, 1, 3]),
    'Contrast': lambda image: tf.zeros_like(image) + tf.floor(tf.reduce_mean(_grey(image)) + 0.5),
    'Brightness': tf.zeros_like,
    'Sharpness': _smooth,
}

OPS = {
    'AutoContrast': _auto_contrast,
    'Equalize': _equalize,
    'Invert': _invert,
    'Rotate': _rotate,
    'Posterize': lambda image, level, sign, fill: _posterize_bits(
        image, tf.cast(level * 4.0, tf.int32)),
    'PosterizeIncreasing': lambda image, level, sign, fill: _posterize_bits(
        image, 4 - tf.cast(level * 4.0, tf.int32)),
    'Solarize': lambda image, level, sign, fill: _solarize_at(image, tf.floor(level * 256.0)),
    'SolarizeIncreasing': lambda image, level, sign, fill: _solarize_at(
        image, 256.0 - tf.floor(level * 256.0)),
    'SolarizeAdd': _solarize_add,
    'ShearX': _shear(0),
    'ShearY': _shear(1),
    'TranslateXRel': _translate(0),
    'TranslateYRel': _translate(1),
    **{name: _enhancer(fn, False) for name, fn in _DEGENERATE.items()},
    **{name + 'Increasing': _enhancer(fn, True) for name, fn in _DEGENERATE.items()},
}

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in its order.
_COMMON_HEAD = ('AutoContrast', 'Equalize', 'Invert', 'Rotate')
_COMMON_TAIL = ('ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')
STANDARD_OPS = _COMMON_HEAD + ('Posterize', 'Solarize', 'SolarizeAdd', 'Color', 'Contrast',
                               'Brightness', 'Sharpness') + _COMMON_TAIL
INCREASING_OPS = _COMMON_HEAD + ('PosterizeIncreasing', 'SolarizeIncreasing', 'SolarizeAdd',
                                 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing',
                                 'SharpnessIncreasing') + _COMMON_TAIL


def apply_op(image: tf.Tensor, name: str, magnitude: float, sign: float = 1.0,
             fill: Sequence[int] = IMAGENET_FILL) -> tf.Tensor:
  """One named op at a fixed magnitude (0-10 scale): uint8 [H, W, 3] -> uint8 [H, W, 3]."""
  level = tf.constant(magnitude / _LEVEL_DENOM, tf.float32)
  return to_uint8(OPS[name](tf.cast(image, tf.float32), level, tf.constant(sign, tf.float32),
                            fill))


def rand_augment(image: tf.Tensor, seed: tf.Tensor, policy: RandAugmentPolicy,
                 fill: Sequence[int] = IMAGENET_FILL) -> tf.Tensor:
  """RandAugment one uint8 [H, W, 3] image with stateless `seed` (int [2]); same shape, uint8."""
  names = policy.op_names
  for op_seed in tf.unstack(tf.random.experimental.stateless_split(seed, policy.num_ops)):
    choice_seed, apply_seed, magnitude_seed, sign_seed = tf.unstack(
        tf.random.experimental.stateless_split(op_seed, 4))
    index = tf.random.stateless_uniform([], choice_seed, 0, len(names), tf.int32)
    magnitude = tf.constant(policy.magnitude, tf.float32)
    if math.isinf(policy.magnitude_std):
      magnitude = tf.random.stateless_uniform([], magnitude_seed, 0.0, policy.magnitude)
    elif policy.magnitude_std > 0:
      magnitude += policy.magnitude_std * tf.random.stateless_normal([], magnitude_seed)
    level = tf.clip_by_value(magnitude, 0.0, policy.magnitude_max) / _LEVEL_DENOM
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) > 0.5, -1.0, 1.0)
    x = tf.cast(image, tf.float32)
    # x, level and sign are this image's, the same for every branch
    branches = [lambda op=OPS[n]: to_uint8(op(x, level, sign, fill))  # noqa: B023
                for n in names]
    augmented = tf.switch_case(index, branches)
    apply = tf.random.stateless_uniform([], apply_seed) < policy.op_prob
    image = tf.where(apply, augmented, image)
  return image
