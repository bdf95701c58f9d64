"""Tiny ViT config for tests: trains in seconds."""

import dataclasses

from examples.vit.configs import default


def get_config() -> default.Config:
  return dataclasses.replace(
    default.get_config(),
    # A fixed memory (the default is the run-length rule): the tests' golden
    # numbers and the README's tiny-run results are at 0.95.
    beta=0.95,
    num_steps=300,
    batch_size=64,
    d_model=32,
    num_layers=2,
    num_heads=2,
    learning_rate=1e-2,
    weight_decay=0.05,
    warmup_steps=20,
    log_every=20,
    eval_every=100,
    checkpoint_every=100,
  )
