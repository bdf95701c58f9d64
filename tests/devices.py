"""Runs a test script in a fresh process that sees 8 simulated CPU devices.

jax fixes its device count when it starts, so multi-device tests run their
assertions in a subprocess with ``--xla_force_host_platform_device_count=8``.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_8_devices(script: str, ok_line: str) -> str:
  """Runs ``script``; asserts it exits 0 and prints ``ok_line``; returns stdout."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env["JAX_PLATFORMS"] = "cpu"
  # Compiling dominates these runs; XLA's optimisations change no assertion.
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
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
