"""Pretraining objectives, one module each."""
