"""Fixtures shared by the library's tests (tests/) and the examples' (examples/)."""

import contextlib
import os
import subprocess
import sys

import hypothesis
import jax
import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))

# A persistent compilation cache, so that a rerun (the edit-test loop)
# compiles only the programs an edit changed: the suite's time is mostly XLA
# compiling small programs (CONTRIBUTING.md gives the fast tier's cold and warm
# times). The cache key is the program, the compile options and the jax/XLA
# versions, so a stale entry cannot be served. The xdist workers share it;
# the subprocesses the tests start get a directory per worker
# (``subprocess_env``). It has no size limit on purpose: with one, jax
# takes a file lock and rescans every entry at each write, which made a cold
# fast tier 2.4x slower. Entries are compressed streams: a read that races a
# write fails to decompress, in Python, and jax recompiles.
# JAX_COMPILATION_CACHE_DIR overrides the place; empty turns the cache off.
_CACHE_FLAGS = {
  "jax_persistent_cache_min_compile_time_secs": 0,
  "jax_persistent_cache_min_entry_size_bytes": -1,
}
_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
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


@pytest.fixture(scope="session")
def python() -> str:
  return sys.executable


@pytest.fixture(scope="session")
def subprocess_env():
  """Returns ``env(**extra)``: ``os.environ`` for a ``python`` subprocess (a
  script, a trainer, a notebook kernel), updated with ``extra``.

  The subprocess imports this checkout, installed or not. When the cache
  above is on, it keeps one in a directory of its xdist worker's, so that
  only the processes one test starts share it (one after another, or only
  the first process of a multi-process run writes).
  """

  def env(**extra: str) -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
      filter(None, [ROOT, environ.get("PYTHONPATH")])
    )
    if _CACHE:
      environ.update({name.upper(): str(value) for name, value in _CACHE_FLAGS.items()})
      worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
      environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        _CACHE, f"subprocesses-{worker}"
      )
    environ.update(extra)
    return environ

  return env


@pytest.fixture(scope="session")
def run_on_8_devices(subprocess_env, python):
  """Returns ``run(script, ok_line)``: runs the Python source ``script`` on 8
  CPU devices, asserts that it exits 0 and prints ``ok_line``, and returns
  its stdout.

  jax fixes its device count when it starts, so multi-device tests run their
  assertions in a subprocess with ``--xla_force_host_platform_device_count=8``.
  """

  def run(script: str, ok_line: str) -> str:
    result = subprocess.run(
      [python, "-c", script],
      env=subprocess_env(
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        # Compiling dominates these runs; XLA's optimisations change no assertion.
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
      ),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ok_line in result.stdout, result.stdout[-3000:]
    return result.stdout

  return run
