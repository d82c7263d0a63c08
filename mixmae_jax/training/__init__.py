"""Objective-agnostic training: the per-device step and its device wrapper, the loop skeleton,
checkpoints, metrics, pictures, the optimizer, configs and their checks, multi-host start-up.

Nothing here names a pretraining objective or an encoder family: they are found by the names in
a config (`model.objective.name`, `model.encoder.name`) and used through their contracts
(`objectives/__init__.py`, `networks/__init__.py`).
"""
