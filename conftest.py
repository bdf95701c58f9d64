"""Fixtures shared by the library's tests (tests/) and the examples' (examples/)."""

import contextlib
import os

import hypothesis
import jax
import pytest

# A persistent compilation cache, so that a rerun (the edit-test loop)
# compiles only the programs an edit changed: the suite's time is mostly XLA
# compiling small programs (README.md gives the fast tier's cold and warm
# times). The cache key is the program, the compile options and the jax/XLA
# versions, so a stale entry cannot be served. The xdist workers share it;
# the subprocesses the tests start get a directory per worker
# (examples/conftest.py). It has no size limit on purpose: with one, jax
# takes a file lock and rescans every entry at each write, which made a cold
# fast tier 2.4x slower. Entries are compressed streams: a read that races a
# write fails to decompress, in Python, and jax recompiles.
# JAX_COMPILATION_CACHE_DIR overrides the place; empty turns the cache off.
_CACHE_FLAGS = {
  "jax_persistent_cache_min_compile_time_secs": 0,
  "jax_persistent_cache_min_entry_size_bytes": -1,
}
_CACHE = os.environ.get(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".jax_cache")
)
if _CACHE:
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  for _name, _value in _CACHE_FLAGS.items():
    jax.config.update(_name, _value)


# Hypothesis draws 20 examples per property in the full suite (README's test
# command, CI). The fast tier draws 5, the same ones on every run: its
# programs are then the ones the compilation cache already holds, so a rerun
# compiles only what an edit changed. A test may still ask for fewer.
hypothesis.settings.register_profile(
  "suite",
  max_examples=20,
  deadline=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
  "fast_tier",
  parent=hypothesis.settings.get_profile("suite"),
  max_examples=5,
  derandomize=True,
)
hypothesis.settings.load_profile("suite")


def pytest_configure(config):
  """The fast tier (``-m "not slow"``) is the edit-test loop: it loads
  hypothesis' ``fast_tier`` profile and compiles with XLA's optimisation
  passes off (``jax_disable_most_optimizations``), which takes a fifth off a
  cold run, whose time is mostly XLA compiling small programs. Its programs
  compute the same values to float rounding; the full suite (README's test
  command, CI) compiles with the optimisations users run."""
  if config.getoption("markexpr") == "not slow":
    hypothesis.settings.load_profile("fast_tier")
    jax.config.update("jax_disable_most_optimizations", True)


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


def _family(item) -> tuple:
  """The test function an item is a case of (pytest or absl parameters, chex
  variants): its module, class and undecorated name."""
  fn = getattr(item, "obj", None)
  while hasattr(fn, "__wrapped__"):
    fn = fn.__wrapped__
  name = getattr(fn, "__name__", None) or getattr(item, "originalname", item.name)
  if hasattr(item, "originalname") and item.originalname != item.name:
    name = item.originalname  # pytest.mark.parametrize
  cls = getattr(item, "cls", None)
  return (item.module.__name__, cls.__name__ if cls else None, name)


def pytest_collection_modifyitems(config, items):
  """The fast tier (``-m "not slow"``) runs every test function once.

  Of each parameterized test (pytest or absl parameters, chex variants) the
  first case runs in the fast tier, jitted where it has a jitted variant;
  its other cases are marked ``slow`` and run with everything else in the
  full suite (README's test command, CI).
  """
  del config
  ordered = sorted(items, key=lambda it: "without_jit" in it.name)  # stable
  seen = set()
  for item in ordered:
    family = _family(item)
    if family in seen:
      item.add_marker(pytest.mark.slow)
    seen.add(family)
