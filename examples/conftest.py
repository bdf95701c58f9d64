"""Shared pytest fixtures for the example trainers' tests.

Compiling a train step takes seconds on a CPU, running a tiny one
milliseconds, so the tests use the root conftest's persistent compilation
cache: each distinct program is compiled once (and not again on a rerun). The
subprocesses the tests start (``subprocess_env``) keep theirs in a directory
of their xdist worker's.
"""

import os
import sys

import jax
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The persistent-cache settings (the root conftest's) that subprocesses copy.
_CACHE_SETTINGS = (
  "jax_compilation_cache_dir",
  "jax_persistent_cache_min_compile_time_secs",
  "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(scope="session")
def subprocess_env():
  """Returns ``env(**extra)``: an environment for ``python -m examples...``
  subprocesses that imports this checkout and uses a compilation cache
  (when the root conftest turned it on): one directory per xdist worker, so
  that only the processes one test starts share it (and write it one after
  another, or only the first process of a multi-process run)."""
  cache = {}
  if jax.config.values.get("jax_compilation_cache_dir"):
    cache = {name.upper(): str(jax.config.values[name]) for name in _CACHE_SETTINGS}
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    cache["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
      cache["JAX_COMPILATION_CACHE_DIR"], f"subprocesses-{worker}"
    )

  def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, out.get("PYTHONPATH", "")])
    out.update(cache)
    out.update(extra)
    return out

  return env


@pytest.fixture(scope="session")
def python() -> str:
  return sys.executable
