"""Measurement: the train-step and input-pipeline benchmarks, and small experiments that check
that what is built learns (the digits comparison)."""
