"""Tiny GPT config for tests: trains in seconds."""

import dataclasses

from examples.gpt.configs import default


def get_config() -> default.Config:
  return dataclasses.replace(
    default.get_config(),
    # A fixed memory (the default is the run-length rule): the tests' golden
    # numbers and the README's tiny-run results are at 0.95.
    beta=0.95,
    num_steps=200,
    batch_size=16,
    block_size=32,
    d_model=32,
    num_layers=2,
    num_heads=2,
    learning_rate=1e-2,
    warmup_steps=10,
    log_every=10,
    eval_every=100,
    checkpoint_every=100,
    eval_batches=4,
    sample_chars=100,
  )
