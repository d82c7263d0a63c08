"""Decoding encoded images and the MixMAE training crop, as TensorFlow ops on one image's bytes.

Everything here runs inside `tf.data` maps (`input_pipeline.py` builds the pipelines). The
training crop is torchvision's RandomResizedCrop as MixMAE uses it, with two documented
differences that come from TensorFlow's crop sampler and resize op:
- `stateless_sample_distorted_bounding_box` draws the aspect ratio and then the crop height
  uniformly (torchvision draws the area and the log aspect ratio uniformly), so small crops come a
  little more often; after 10 failed attempts it falls back to the whole image, not a centre crop;
- the bicubic resize uses PIL's kernel (Keys, a = -0.5, half-pixel centres; it matches PIL when
  enlarging) but does not widen it to antialias when shrinking as PIL does. Typical ImageNet crops
  (about 350 px a side) shrink by less than 2x at 224, and antialiasing would add ~1.5 ms/image.

Files are told apart by their first bytes, never by name: ImageNet has PNGs and CMYK JPEGs named
`.JPEG`. A JPEG with no end-of-image marker (a truncated download) is rejected even though libjpeg
would decode the part of it that is there: whether that worked would depend on where the random
crop fell, so the same file would be skipped by some epochs and not others.

An image whose header declares more than `max_pixels` pixels is refused before anything is
decoded (`assert_within_pixels`): a 1 MB PNG can declare 20000 x 20000 pixels, 1.2 GB of RGB.
"""
from typing import Sequence, Tuple

import tensorflow as tf

from mixmae_jax.data import DEFAULT_MAX_PIXELS  # data.max_image_pixels' default

_JPEG_MAGIC = b'\xff\xd8\xff'
# Inside JPEG scan data 0xFF is always followed by 0x00 or a restart marker, so an 0xFFD9 pair near
# the end can only be the end-of-image marker; the window allows for padding some writers append.
_END_OF_IMAGE_WINDOW = 1024


def is_jpeg(data: tf.Tensor) -> tf.Tensor:
  """Whether encoded bytes (a scalar string) start like a JPEG file; a scalar bool."""
  return tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)


def is_webp(data: tf.Tensor) -> tf.Tensor:
  """Whether encoded bytes are a WebP file (a RIFF container of type WEBP); a scalar bool."""
  return tf.logical_and(tf.equal(tf.strings.substr(data, 0, 4), b'RIFF'),
                        tf.equal(tf.strings.substr(data, 8, 4), b'WEBP'))


_HEADER = 32  # bytes that hold the size of every format read here


def _header(data: tf.Tensor) -> tf.Tensor:
  """The first 32 bytes, zero-padded: a scalar string of exactly 32 bytes."""
  return tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, _HEADER),
                                            b'\0' * _HEADER]), 0, _HEADER)


def declared_pixels(data: tf.Tensor) -> tf.Tensor:
  """Width x height as the file's header declares it, without decoding: int64 scalar (0 for a
  format not read here, which the decoder then refuses or decodes).

  JPEG (its frame header), PNG (IHDR), GIF (logical screen), BMP (info header) and WebP (VP8,
  VP8L and VP8X headers).
  """
  head = _header(data)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
  le = lambda i, n: sum(b[i + j] * 256 ** j for j in range(n))  # noqa: E731
  be = lambda i, n: sum(b[i + j] * 256 ** (n - 1 - j) for j in range(n))  # noqa: E731
  signed = lambda v: tf.abs(tf.where(v >= 2 ** 31, v - 2 ** 32, v))  # noqa: E731
  start = lambda n: tf.strings.substr(head, 0, n)  # noqa: E731
  chunk = tf.strings.substr(head, 12, 4)
  vp8l_w = 1 + (b[21] + (b[22] % 64) * 256)
  vp8l_h = 1 + ((b[22] // 64) + b[23] * 4 + (b[24] % 16) * 1024)
  webp = tf.where(tf.equal(chunk, b'VP8X'), (le(24, 3) + 1) * (le(27, 3) + 1),
                  tf.where(tf.equal(chunk, b'VP8L'), vp8l_w * vp8l_h,
                           (le(26, 2) % 16384) * (le(28, 2) % 16384)))
  other = tf.where(tf.equal(start(8), b'\x89PNG\r\n\x1a\n'), be(16, 4) * be(20, 4),
                   tf.where(tf.equal(start(3), b'GIF'), le(6, 2) * le(8, 2),
                            tf.where(tf.equal(start(2), b'BM'),
                                     signed(le(18, 4)) * signed(le(22, 4)),
                                     tf.where(is_webp(head), webp, tf.constant(0, tf.int64)))))

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return shape[0] * shape[1]

  return tf.cond(is_jpeg(head), jpeg, lambda: other)


def assert_within_pixels(data: tf.Tensor, max_pixels: int) -> tf.Operation:
  """An op that fails (so `ignore_errors` drops and counts the image) when the header declares
  more than `max_pixels` pixels; nothing is decoded."""
  return tf.debugging.Assert(declared_pixels(data) <= max_pixels,
                             ['image larger than data.max_image_pixels', max_pixels])


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
  """Any supported format decoded whole to uint8 `[H, W, 3]`, first frame of animations.

  TensorFlow converts grey, palette, CMYK and alpha images to RGB itself, except WebP with
  alpha, which it refuses to give as 3 channels: that one is decoded as it is and its alpha
  dropped (what PIL's `convert('RGB')`, and so the official data loaders, do).
  """
  def webp():
    return tf.ensure_shape(
        tf.io.decode_image(data, channels=0, expand_animations=False)[..., :3], [None, None, 3])

  def other():
    return tf.io.decode_image(data, channels=3, expand_animations=False)

  return tf.cond(is_webp(data), webp, other)


def assert_jpeg_complete(data: tf.Tensor) -> tf.Operation:
  """An op that fails (so `ignore_errors` drops the image) when the JPEG has no end marker."""
  length = tf.strings.length(data)
  start = tf.maximum(length - _END_OF_IMAGE_WINDOW, 0)
  tail = tf.io.decode_raw(tf.strings.substr(data, start, length - start), tf.uint8)
  found = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))
  return tf.debugging.Assert(found, ['truncated JPEG: no end-of-image marker'])


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor, scale: Sequence[float],
                       ratio: Sequence[float]) -> tf.Tensor:
  """A RandomResizedCrop window for an image of `shape` `[H, W, C]`: int32 `[4]` (y, x, h, w).

  `scale` bounds the window's area as a fraction of the image's, `ratio` its width / height.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.zeros([1, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=tuple(ratio), area_range=tuple(scale),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


# libjpeg's DCT-domain scalings: decoding at 1/r costs a fraction of the inverse DCT, colour
# conversion and upsampling (the entropy decoding of the whole file stays).
DCT_SCALES = (2, 4, 8)


def dct_scale_index(h: tf.Tensor, w: tf.Tensor, output_size: int) -> tf.Tensor:
  """0 for a full-scale decode, else i + 1 for DCT_SCALES[i]: the largest 1/r at which the
  crop's shorter side still has at least `output_size` pixels (the resize then only shrinks)."""
  shorter = tf.minimum(h, w)
  fits = [tf.cast(shorter >= r * output_size, tf.int32) for r in DCT_SCALES]
  return tf.add_n(fits)


def decode_and_random_crop(data: tf.Tensor, seed: tf.Tensor, scale: Sequence[float],
                           ratio: Sequence[float], fused_jpeg: bool = True,
                           dct_scaled_for: int = 0) -> tf.Tensor:
  """Decodes only the random crop of a JPEG, or all of any other image and then crops.

  `fused_jpeg=False` decodes JPEGs whole too (the same crop; kept to measure what fusing saves).
  `dct_scaled_for=S` (> 0): a JPEG crop whose shorter side is at least 2S is decoded at the
  largest of 1/2, 1/4, 1/8 scale that keeps it at least S (the whole image at that scale, then
  the scaled window): the crop comes out smaller, for a resize to S.

  Args:
    data: a scalar string, the encoded file.
    seed: int `[2]`, a stateless seed for the crop window.
    scale, ratio: as in `random_crop_window`.
  Returns:
    uint8 `[h, w, 3]`; grey, CMYK and RGBA sources come out RGB, animations their first frame.
  """
  def fused_jpeg_crop():
    with tf.control_dependencies([assert_jpeg_complete(data)]):
      shape = tf.image.extract_jpeg_shape(data)
    window = random_crop_window(shape, seed, scale, ratio)
    full = lambda: tf.image.decode_and_crop_jpeg(data, window, channels=3)  # noqa: E731
    if not dct_scaled_for:
      return full()
    y, x, h, w = tf.unstack(window)

    def scaled(r):
      image = tf.io.decode_jpeg(data, channels=3, ratio=r)
      return image[y // r:(y + h) // r, x // r:(x + w) // r]

    return tf.switch_case(dct_scale_index(h, w, dct_scaled_for),
                          [full] + [lambda r=r: scaled(r) for r in DCT_SCALES])

  def any_format():
    image = decode_rgb(data)
    y, x, h, w = tf.unstack(random_crop_window(tf.shape(image), seed, scale, ratio))
    return image[y:y + h, x:x + w]

  if not fused_jpeg:
    return any_format()
  return tf.cond(is_jpeg(data), fused_jpeg_crop, any_format)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Rounds a float image to uint8, clipping the bicubic kernel's overshoot to [0, 255]."""
  return tf.saturate_cast(tf.round(image), tf.uint8)


def training_crop(data: tf.Tensor, seed: tf.Tensor, image_size: int, scale: Sequence[float],
                  ratio: Sequence[float], hflip: bool, fused_jpeg: bool = True,
                  dct_scaled: bool = False, resize_method: str = 'bicubic',
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
  """MixMAE's augmentation of one encoded image: uint8 `[image_size, image_size, 3]`.

  RandomResizedCrop (`resize_method`: bicubic as in the recipes, or bilinear) and, if `hflip`,
  a flip with probability 1/2; all randomness comes from `seed` (int `[2]`), so the same seed
  gives the same crop on every run. `dct_scaled`: see `decode_and_random_crop`. An image
  declaring more than `max_pixels` pixels fails before decoding.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  with tf.control_dependencies([assert_within_pixels(data, max_pixels)]):
    crop = decode_and_random_crop(data, crop_seed, scale, ratio, fused_jpeg,
                                  dct_scaled_for=image_size if dct_scaled else 0)
  if hflip:
    # On the uint8 crop rather than the float output: less memory to move, and a symmetric
    # kernel with half-pixel centres makes flip-then-resize equal to resize-then-flip.
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    crop = tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
  resized = tf.image.resize(crop, [image_size, image_size], method=resize_method)
  return to_uint8(resized)


def decode_any(data: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
  """Decodes a whole image of any supported format to uint8 `[H, W, 3]`, rejecting cut JPEGs
  and images declaring more than `max_pixels` pixels."""
  def checked_jpeg():
    with tf.control_dependencies([assert_jpeg_complete(data)]):
      return decode_rgb(data)

  with tf.control_dependencies([assert_within_pixels(data, max_pixels)]):
    return tf.cond(is_jpeg(data), checked_jpeg, lambda: decode_rgb(data))


def center_crop(data: tf.Tensor, image_size: int,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
  """The evaluation view: shorter side resized to `image_size` (bicubic), centre square.

  Returns uint8 `[image_size, image_size, 3]`.
  """
  image = decode_any(data, max_pixels)
  height, width = _float_hw(image)
  scale = image_size / tf.minimum(height, width)
  new_hw = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), image_size)
  resized = tf.image.resize(image, new_hw, method='bicubic')
  top, left = (new_hw[0] - image_size) // 2, (new_hw[1] - image_size) // 2
  return to_uint8(resized[top:top + image_size, left:left + image_size])


def _float_hw(image: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  shape = tf.cast(tf.shape(image), tf.float32)
  return shape[0], shape[1]

