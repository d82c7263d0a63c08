"""Evaluation of pretrained encoders: fine-tuning, linear probing and k-NN, with what they need
(layer-wise lr decay, weight EMA, Mixup/CutMix, random erasing, accuracy, pretrained encoders).
Works for any encoder family through the encoder contract (`networks/__init__.py`).
"""
