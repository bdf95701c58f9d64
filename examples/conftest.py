"""Shared pytest fixtures for the example trainers' tests.

Compiling a train step takes seconds on a CPU, running a tiny one
milliseconds, so the tests use the root conftest's persistent compilation
cache: each distinct program is compiled once (and not again on a rerun). The
subprocesses the tests start (``subprocess_env``) keep theirs in a directory
of their xdist worker's (``tests/subprocesses.py``).
"""

import sys

import pytest

from tests import subprocesses


@pytest.fixture(scope="session")
def subprocess_env():
  """Returns ``env(**extra)``: the environment of a ``python -m examples...``
  subprocess (``tests.subprocesses.environ``: this checkout on the path, a
  compilation cache of the xdist worker's)."""
  return subprocesses.environ


@pytest.fixture(scope="session")
def python() -> str:
  return sys.executable
