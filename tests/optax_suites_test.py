"""optax's own optimizer tests, run on every balanced path (see
tests/optax_suites.py for how they are imported and what is skipped)."""

import os
import re
import subprocess
import sys
import unittest

import jax
import pytest

from tests import optax_suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fast tier runs optax's alias and contrib tests on balanced_adam and
# int8 state; the full suite on every other path too.
_FAST_PATHS = ("balanced_adam", "int8_state")
_OTHER_PATHS = tuple(p for p in optax_suites.OPTIMIZERS if p not in _FAST_PATHS)

AliasSuite = optax_suites.alias_suite(_FAST_PATHS)
ContribSuite = optax_suites.contrib_suite(_FAST_PATHS)
AliasSuiteOtherPaths = pytest.mark.slow(optax_suites.alias_suite(_OTHER_PATHS))
ContribSuiteOtherPaths = pytest.mark.slow(optax_suites.contrib_suite(_OTHER_PATHS))
Float64Suite = optax_suites.Float64Suite

_IN_PROCESS = (
  AliasSuite,
  AliasSuiteOtherPaths,
  ContribSuite,
  ContribSuiteOtherPaths,
  Float64Suite,
)


def _case_names(suite: type) -> list[str]:
  return unittest.TestLoader().getTestCaseNames(suite)


def test_every_skip_names_a_case_of_a_suite():
  names = {
    n
    for suite in (*_IN_PROCESS, optax_suites.ShardingSuite)
    for n in _case_names(suite)
  }
  assert set(optax_suites.SKIPS) <= names, set(optax_suites.SKIPS) - names


def test_every_balanced_path_runs_in_every_suite():
  for suites in (
    (AliasSuite, AliasSuiteOtherPaths),
    (ContribSuite, ContribSuiteOtherPaths),
    (Float64Suite,),
    (optax_suites.ShardingSuite,),
  ):
    names = [n for suite in suites for n in _case_names(suite)]
    for optimizer in optax_suites.OPTIMIZERS:
      assert any(f"_{optimizer}" in n for n in names), (suites[0].__name__, optimizer)


def test_optax_version_gates_see_jax_as_a_version():
  # optax writes `if jax.__version__ < '0.7.2': self.skipTest(...)`; as
  # strings '0.10.2' < '0.7.2', which would skip the sharding tests.
  assert "0.10.2" < "0.7.2"
  version = optax_suites._Version("0.10.2")
  assert not version < "0.7.2"
  assert not version < "0.8.1"
  assert version >= "0.10.2"
  assert optax_suites._Version(jax.__version__) >= "0.7.2"


@pytest.mark.slow
def test_sharding_suite_on_8_devices(subprocess_env):
  names = _case_names(optax_suites.ShardingSuite)
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-q",
      "-rs",
      "-p",
      "no:cacheprovider",
      "tests/optax_suites.py::ShardingSuite",
    ],
    env=subprocess_env(
      XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    ),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  summary = result.stdout.strip().splitlines()[-1]
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
  # Every case ran and passed: none skipped itself, none was deselected.
  assert re.fullmatch(rf"{len(names)} passed(, \d+ warnings?)? in .*", summary), summary
