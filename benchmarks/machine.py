"""Describes the machine a benchmark ran on, for the results file."""

import hashlib
import os
import pathlib
import platform
from typing import Any

import jax
import jaxlib
import optax

import balanced_optax


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or the platform's best guess)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.partition(":")[2].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def cpu_cores() -> int:
  """The cores this process may run on (all cores where that is unknown)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def load_average() -> list[float] | None:
  """The 1, 5 and 15 minute load averages, or None where the OS has none."""
  try:
    return list(os.getloadavg())
  except (AttributeError, OSError):
    return None


def describe() -> dict[str, Any]:
  """The accelerator jax uses by default, the host CPU and the versions.

  Returns:
    A JSON-ready dict: ``platform`` (cpu/gpu/tpu), ``device_kind`` (e.g.
    ``"NVIDIA H100 80GB HBM3"``), ``device_count``, ``cpu_model``, ``cpu_cores``
    (the cores this process may use), ``load_average`` (1, 5, 15 minutes: how
    busy the host was, i.e. how noisy CPU timings are), library versions and
    ``balanced_optax_source``, a hash of the library's code that was measured.
  """
  device = jax.devices()[0]
  return {
    "platform": device.platform,
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
    "cpu_model": cpu_model(),
    "cpu_cores": cpu_cores(),
    "load_average": load_average(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "optax": optax.__version__,
    "balanced_optax_source": source_hash(),
  }


def source_hash() -> str:
  """First 12 hex digits of the SHA-256 of balanced_optax's ``*.py`` files."""
  digest = hashlib.sha256()
  for path in sorted(pathlib.Path(balanced_optax.__file__).parent.glob("*.py")):
    digest.update(path.name.encode() + path.read_bytes())
  return digest.hexdigest()[:12]
