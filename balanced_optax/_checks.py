"""Construction-time checks of hyperparameters and trees.

Bad hyperparameters must fail when the optimizer is built, with a message that
names the argument and its valid range, not as a NaN thousands of steps later.
Values that are traced (``optax.inject_hyperparams`` under ``jax.jit``) or are
schedules cannot be inspected here; they are checked when concrete.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete_float(name: str, value: Any) -> float | None:
  """The value as a Python float, or None when it is traced."""
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, bool):
    raise TypeError(f"{name} must be a number, got the bool {value!r}.")
  # NumPy, not jnp: under a jit trace jnp.asarray would stage out a tracer.
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.number):
    raise TypeError(f"{name} must be a number, got {value!r}.")
  if array.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {array.shape}.")
  return float(array)


def in_interval(
  name: str,
  value: Any,
  low: float,
  high: float = math.inf,
  *,
  low_open: bool = False,
  high_open: bool = False,
) -> np.ndarray:
  """``value`` (a number or an array) as float64, or ValueError naming ``name``
  and the interval unless every element lies in it (NaN never does)."""
  try:
    x = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{name} must be a number or an array of numbers.") from e
  above = x > low if low_open else x >= low
  below = x < high if high_open else x <= high
  if not np.all(above & below):
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value!r}.")
  return x


def check_interval(
  name: str,
  value: Any,
  low: float,
  high: float = math.inf,
  *,
  high_open: bool = False,
) -> None:
  """For a scalar hyperparameter: ValueError unless ``low <= value <= high``
  (``< high`` if open); nothing when it is traced.

  An unbounded range (``high=inf``) is open: infinity is never a valid
  hyperparameter (an infinite learning rate or eps is a NaN or a frozen
  model waiting to happen).
  """
  if _concrete_float(name, value) is not None:
    in_interval(name, value, low, high, high_open=high_open or math.isinf(high))


def check_beta(name: str, value: Any) -> None:
  check_interval(name, value, 0.0, 1.0, high_open=True)


def check_learning_rate(value: Any) -> None:
  """Constant learning rates must be >= 0; schedules are checked by optax."""
  if callable(value):
    return
  check_interval("learning_rate", value, 0.0)


def float_dtype_or_none(name: str, dtype: Any) -> jnp.dtype | None:
  """Canonical floating dtype, or None (meaning: the params' own dtype)."""
  if dtype is None:
    return None
  try:
    dtype = jnp.dtype(dtype)
  except TypeError as e:
    raise TypeError(f"{name} must be a floating dtype, got {dtype!r}.") from e
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating dtype, got {dtype}.")
  return jax.dtypes.canonicalize_dtype(dtype)


def check_same_structure(what: str, updates: Any, reference: Any) -> None:
  """Clear error when gradients do not match the tree the state was built for."""
  got, want = jax.tree.structure(updates), jax.tree.structure(reference)
  if got != want:
    raise ValueError(
      f"{what}: the gradient tree does not match the tree the optimizer "
      f"state was initialised with.\n  gradients: {got}\n  state:     {want}"
    )
