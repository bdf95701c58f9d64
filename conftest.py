"""Fixtures shared by the library's tests (tests/) and the examples' (examples/)."""

import contextlib

import jax
import pytest


@pytest.fixture(scope="session")
def unoptimized_xla():
  """Returns a context manager under which XLA skips most optimisation passes.

  For tiny programs that run a few dozen steps (the beta=auto pilot compiles
  four): they compile several seconds faster each and compute the same
  values to float rounding.
  """
  name = "jax_disable_most_optimizations"

  @contextlib.contextmanager
  def context():
    saved = jax.config.values.get(name)
    jax.config.update(name, True)
    try:
      yield
    finally:
      jax.config.update(name, saved)

  return context
