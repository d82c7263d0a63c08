"""Random erasing on the device, as timm's `RandomErasing(mode='pixel', max_count=1)`.

Per image, with probability `prob`: draw a target area U(min_area, max_area) x image area and a
log-uniform aspect ratio in [min_aspect, 1 / min_aspect]; the box is h = round(sqrt(area *
aspect)), w = round(sqrt(area / aspect)), retried up to 10 times until it fits strictly inside;
its pixels become N(0, 1) noise per pixel and channel. It runs on normalized images (where N(0, 1)
is noise of the data's own scale), before Mixup/CutMix, as in timm's transform order. The 10
attempts are drawn at once and the first that fits is kept, so shapes stay static.
"""
import math

import jax
import jax.numpy as jnp

_ATTEMPTS = 10


def _erase_one(key: jax.Array, image: jax.Array, prob: float, min_area: float, max_area: float,
               min_aspect: float) -> jax.Array:
  """[H, W, C] normalized -> [H, W, C] with at most one box of noise."""
  height, width, _ = image.shape
  apply_key, area_key, aspect_key, top_key, left_key, noise_key = jax.random.split(key, 6)
  area = jax.random.uniform(area_key, (_ATTEMPTS,), minval=min_area, maxval=max_area)
  area = area * height * width
  log_aspect = jax.random.uniform(aspect_key, (_ATTEMPTS,), minval=math.log(min_aspect),
                                  maxval=-math.log(min_aspect))
  aspect = jnp.exp(log_aspect)
  h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits)  # the first attempt that fits (0 when none does: then nothing)
  h, w = h[first], w[first]
  top = jax.random.randint(top_key, (), 0, height - h + 1)
  left = jax.random.randint(left_key, (), 0, width - w + 1)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  erase = (jax.random.uniform(apply_key) < prob) & fits[first]
  noise = jax.random.normal(noise_key, image.shape, image.dtype)
  return jnp.where((inside & erase)[:, :, None], noise, image)


def random_erase(key: jax.Array, images: jax.Array, prob: float, min_area: float = 0.02,
                 max_area: float = 1.0 / 3.0, min_aspect: float = 0.3) -> jax.Array:
  """Erase one random box in each image with probability `prob`. images: [B, H, W, C]."""
  if prob <= 0:
    return images
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda k, x: _erase_one(k, x, prob, min_area, max_area, min_aspect))(keys,
                                                                                         images)
