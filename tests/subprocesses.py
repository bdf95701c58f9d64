"""The environment of the subprocesses the tests start, and 8-device runs.

Scripts, trainers and notebook kernels run as ``python`` subprocesses with
:func:`environ`: they import this checkout (installed or not) and keep a
compilation cache when the root conftest turned one on, in a directory of
their xdist worker's, so that only the processes one test starts share it
(one after another, or only the first process of a multi-process run writes).

jax fixes its device count when it starts, so multi-device tests run their
assertions in a subprocess with ``--xla_force_host_platform_device_count=8``
(:func:`run_on_8_devices`).
"""

import os
import subprocess
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The persistent-cache settings (the root conftest's) that subprocesses copy.
_CACHE_SETTINGS = (
  "jax_compilation_cache_dir",
  "jax_persistent_cache_min_compile_time_secs",
  "jax_persistent_cache_min_entry_size_bytes",
)


def environ(**extra: str) -> dict[str, str]:
  """``os.environ`` for a test's subprocess, updated with ``extra``."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  if jax.config.values.get("jax_compilation_cache_dir"):
    env.update({name.upper(): str(jax.config.values[name]) for name in _CACHE_SETTINGS})
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
      env["JAX_COMPILATION_CACHE_DIR"], f"subprocesses-{worker}"
    )
  env.update(extra)
  return env


def run_on_8_devices(script: str, ok_line: str) -> str:
  """Runs ``script``; asserts it exits 0 and prints ``ok_line``; returns stdout."""
  env = environ(
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
    # Compiling dominates these runs; XLA's optimisations change no assertion.
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
  )
  result = subprocess.run(
    [sys.executable, "-c", script],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert ok_line in result.stdout, result.stdout[-3000:]
  return result.stdout
