"""Shared pytest fixtures for the example trainers' tests.

Compiling a train step takes seconds on a CPU, running a tiny one
milliseconds, so the tests share the root conftest's persistent compilation
cache: each distinct program is compiled once (and not again on a rerun), in
this process or in the subprocesses the tests start (``subprocess_env``).
"""

import os
import sys

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE_FLAGS = {
  "jax_persistent_cache_min_compile_time_secs": 0,
  "jax_persistent_cache_min_entry_size_bytes": -1,
}


@pytest.fixture(scope="session")
def compilation_cache_dir(tmp_path_factory) -> str:
  """The root conftest's persistent cache, or a session one if it is off."""
  return jax.config.jax_compilation_cache_dir or str(
    tmp_path_factory.mktemp("jax_cache")
  )


@pytest.fixture(autouse=True, scope="session")
def compilation_cache(compilation_cache_dir):
  """Makes sure the persistent cache is on for the trainers' tests."""
  if jax.config.jax_compilation_cache_dir == compilation_cache_dir:
    yield  # The root conftest turned it on for the whole session.
    return
  names = [*_CACHE_FLAGS, "jax_compilation_cache_dir"]
  saved = {n: jax.config.values.get(n) for n in names}
  for name, value in {
    **_CACHE_FLAGS,
    "jax_compilation_cache_dir": compilation_cache_dir,
  }.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()


@pytest.fixture(scope="session")
def subprocess_env(compilation_cache_dir):
  """Returns ``env(**extra)``: an environment for ``python -m examples...``
  subprocesses that imports this checkout and shares the compilation cache."""

  def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, out.get("PYTHONPATH", "")])
    out["JAX_COMPILATION_CACHE_DIR"] = compilation_cache_dir
    out.update({k.upper(): str(v) for k, v in _CACHE_FLAGS.items()})
    out.update(extra)
    return out

  return env


@pytest.fixture(scope="session")
def python() -> str:
  return sys.executable
