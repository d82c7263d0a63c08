"""Input: tf.data streams of augmented images for pretraining and of labelled images for
fine-tuning and evaluation, their decoding and augmentation, and pixel normalization.

Only `pixels` is free of TensorFlow (the devices normalize with it); everything else here runs
tf.data on the CPU and is imported only by the loops that read data.
"""


# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): the default of data.max_image_pixels.
DEFAULT_MAX_PIXELS = 89_478_485


class DataError(ValueError):
  """A data source that cannot feed the run (empty, undecodable, gone, stalled, or at odds with
  a config or checkpoint); the message names the source and what to do. Commands print it as
  one `error:` line."""


class DataMissing(DataError, FileNotFoundError):
  """A data source that is not there (no such folder, an unprepared TFDS dataset)."""

