"""Benchmarks of balanced_optax: step speed and memory, and training quality.

Run from the repository root: ``python -m benchmarks.step`` and
``python -m benchmarks.quality`` (see benchmarks/README.md).
"""
