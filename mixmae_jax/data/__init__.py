"""Input: tf.data streams of augmented images for pretraining and of labelled images for
fine-tuning and evaluation, their decoding and augmentation, and pixel normalization.

Only `pixels` is free of TensorFlow (the devices normalize with it); everything else here runs
tf.data on the CPU and is imported only by the loops that read data.
"""
