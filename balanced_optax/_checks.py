"""Construction-time checks of hyperparameters and trees.

Bad hyperparameters must fail when the optimizer is built, with a message that
names the argument and its valid range, not as a NaN thousands of steps later.
Values that are traced (``optax.inject_hyperparams`` under ``jax.jit``) or are
schedules cannot be inspected here; they are checked when concrete. Every
failure is a ``ValueError`` (the README's promise), strings such as ``"1e-3"``,
bools and unknown dtype names such as ``"bf16"`` included. The helpers here are
shared by the package's modules (none imports another module's private names).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
  return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def real_array(name: str, value: Any, expected: str = "a real number") -> np.ndarray:
  """``value`` as a NumPy array of real numbers, or ValueError naming ``name``
  and saying what was ``expected``.

  Bools, strings (``"1e-3"``), complex numbers and objects are rejected rather
  than converted: ``np.asarray("0.9", float)`` would silently parse the string
  and ``True`` would become 1.0.
  """
  if isinstance(value, bool):
    raise ValueError(f"{name} must be {expected}, got the bool {value!r}.")
  try:
    array = np.asarray(value)
  except (TypeError, ValueError) as e:  # e.g. ragged nested lists
    raise ValueError(f"{name} must be {expected}, got {value!r}.") from e
  # jnp.issubdtype also knows ml_dtypes' floats (bfloat16 has NumPy kind "V").
  if not (
    jnp.issubdtype(array.dtype, jnp.floating)
    or jnp.issubdtype(array.dtype, jnp.integer)
  ):
    raise ValueError(
      f"{name} must be {expected}, got {value!r} ({type(value).__name__})."
    )
  return array


def in_interval(
  name: str,
  value: Any,
  low: float,
  high: float = math.inf,
  *,
  low_open: bool = False,
  high_open: bool = False,
) -> np.ndarray:
  """``value`` (a real number or array) as float64, or ValueError naming
  ``name`` and the interval unless every element lies in it.

  NaN never lies in an interval, and an unbounded end (``high=inf``) is open:
  infinity is never a valid hyperparameter or horizon.
  """
  high_open = high_open or math.isinf(high)
  interval = _interval(low, high, low_open, high_open)
  x = real_array(name, value, f"a number in {interval}").astype(np.float64)
  above = x > low if low_open else x >= low
  below = x < high if high_open else x <= high
  if not np.all(above & below):
    raise ValueError(f"{name} must be in {interval}, got {value!r}.")
  return x


def unit_interval(name: str, value: Any) -> np.ndarray:
  """An EMA memory (a number or an array) in [0, 1) as float64, or ValueError."""
  return in_interval(name, value, 0.0, 1.0, high_open=True)


def beta_grid(name: str, value: Any) -> np.ndarray:
  """A grid of memories: a non-empty 1-D array in [0, 1), sorted ascending."""
  grid = unit_interval(name, value)
  if grid.ndim != 1 or grid.size == 0:
    raise ValueError(
      f"{name} must be a non-empty 1-D sequence in [0.0, 1.0), got shape {grid.shape}."
    )
  return np.sort(grid)


def integer(name: str, value: Any, low: int) -> int:
  """``value`` as an int, or ValueError unless it is an integer >= ``low``:
  a Python or NumPy integer or a 0-d integer array (``inject_hyperparams``
  makes one), not a bool or a float."""
  dtype = getattr(value, "dtype", None)
  is_integer = isinstance(value, int | np.integer) or (
    dtype is not None and np.ndim(value) == 0 and jnp.issubdtype(dtype, jnp.integer)
  )
  if isinstance(value, bool) or not is_integer or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  return int(value)


# A range written with rounded grid values (0.68377 for 1 - 10**-0.5 =
# 0.6837722..., a user's exact grid) still holds the grid value it names.
GRID_RANGE_TOLERANCE = 1e-5


def grid_in_range(name: str, grid: Any, low: float, high: float) -> np.ndarray:
  """The sorted values of ``grid`` within :data:`GRID_RANGE_TOLERANCE` of
  ``[low, high]``, or ValueError naming ``name`` when there are none."""
  g = beta_grid(name, grid)
  inside = g[(g >= low - GRID_RANGE_TOLERANCE) & (g <= high + GRID_RANGE_TOLERANCE)]
  if inside.size == 0:
    # Only the neighbours of the range: a whole grid would drown the message.
    below, above = g[g < low], g[g > high]
    nearest = [f"{below[-1]:.6g} below"] if below.size else []
    nearest += [f"{above[0]:.6g} above"] if above.size else []
    values = "values are" if len(nearest) == 2 else "value is"
    raise ValueError(
      f"{name} has no value inside beta_range=({low}, {high}) (to within"
      f" {GRID_RANGE_TOLERANCE:g}); its nearest {values} {' and '.join(nearest)}."
    )
  return inside


def beta_range(name: str, value: Any) -> tuple[float, float]:
  """``(low, high)`` with ``0 <= low <= high < 1``, or ValueError naming ``name``."""
  if isinstance(value, tuple | list) and any(isinstance(x, bool) for x in value):
    raise ValueError(f"{name} must be (low, high) of numbers, got {value!r}.")
  bounds = unit_interval(name, value)
  if bounds.shape != (2,) or bounds[0] > bounds[1]:
    raise ValueError(
      f"{name} must be (low, high) with 0 <= low <= high < 1, got {value!r}."
    )
  return float(bounds[0]), float(bounds[1])


def below_one(beta: np.ndarray, why: str) -> np.ndarray:
  r"""``beta`` unchanged, or ValueError when a computed memory rounded to 1.0.

  A memory :math:`\beta < 1` whose horizon exceeds float64's resolution
  (:math:`1/(1-\beta) > 2^{53}`) rounds to exactly 1.0, which no optimizer
  accepts; ``why`` names the inputs that produced it.
  """
  if np.any(beta >= 1.0):
    raise ValueError(
      f"{why} gives beta = 1.0 in float64 (a memory horizon 1/(1 - beta) beyond"
      " 2**53 steps), outside [0.0, 1.0)."
    )
  return beta


def broadcastable(**arrays: np.ndarray) -> None:
  """ValueError naming the arguments and their shapes unless they broadcast."""
  try:
    np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
  except ValueError:
    *first, last = arrays
    shapes = ", ".join(f"{n} {np.shape(a)}" for n, a in arrays.items())
    raise ValueError(
      f"{', '.join(first)} and {last} must broadcast together, got shapes {shapes}."
    ) from None


def float_or_array(x: np.ndarray) -> float | np.ndarray:
  """A Python float for a 0-d result, the array otherwise."""
  return float(x) if x.ndim == 0 else x


def check_interval(name: str, value: Any, *interval: float, **ends: bool) -> None:
  """For a scalar hyperparameter: ValueError unless it is a real scalar in
  ``interval`` (``low, high=inf``, ends as :func:`in_interval`'s); nothing
  when it is traced.
  """
  if isinstance(value, jax.core.Tracer):
    return
  if np.iscomplexobj(value) and np.all(np.imag(value) == 0):
    # optax.inject_hyperparams casts hyperparameters to the params' dtype,
    # complex for complex params: 1e-3+0j is the learning rate 1e-3.
    value = np.real(value)
  array = in_interval(name, value, *interval, **ends)
  if array.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {array.shape}.")


# The longest memory the transforms can run: their arithmetic is at least
# float32, where a larger beta rounds to 1.0 (and 1 - beta^k to 0).
MAX_BETA = float(np.nextafter(np.float32(1), np.float32(0)))


def check_beta(name: str, value: Any) -> None:
  """An optimizer's memory: in [0, 1) and below 1.0 in float32."""
  check_interval(name, value, 0.0, 1.0, high_open=True)
  if not isinstance(value, jax.core.Tracer) and np.float32(np.real(value)) >= 1:
    raise ValueError(
      f"{name} must be at most {MAX_BETA!r} (1 - 2**-24), the largest float32"
      f" below 1: got {value!r}, which rounds to 1.0 in float32, where the"
      " moments would stop moving and their debiasing divide by zero."
    )


def check_learning_rate(value: Any) -> None:
  """Constant learning rates must be >= 0; schedules are checked by optax."""
  if callable(value):
    return
  check_interval("learning_rate", value, 0.0)


def float_dtype_or_none(name: str, dtype: Any) -> jnp.dtype | None:
  """Canonical floating dtype, or None (meaning: the params' own dtype)."""
  if dtype is None:
    return None
  expected = "a floating dtype (e.g. jnp.bfloat16 or 'float32') or None"
  try:
    canonical = jnp.dtype(dtype)
  except TypeError as e:  # e.g. "bf16": not a dtype name NumPy or JAX knows
    raise ValueError(f"{name} must be {expected}, got {dtype!r}.") from e
  if not jnp.issubdtype(canonical, jnp.floating):
    raise ValueError(f"{name} must be {expected}, got {canonical}.")
  dtype = canonical
  return jax.dtypes.canonicalize_dtype(dtype)


# The low-bit formats a ``state_dtype`` may name besides a floating dtype.
LOW_BIT_STATE_DTYPES = ("int8", "int4")


def state_dtype_or_none(name: str, dtype: Any) -> jnp.dtype | str | None:
  """A low-bit format's name (``"int8"``, ``"int4"``), a canonical floating
  dtype, or None; ValueError naming ``name`` and the accepted values."""
  if isinstance(dtype, str) and dtype in LOW_BIT_STATE_DTYPES:
    return dtype
  expected = (
    "a floating dtype (e.g. jnp.bfloat16 or 'float32'), 'int8' or 'int4'"
    " (low-bit state) or None"
  )
  try:
    canonical = jnp.dtype(dtype) if dtype is not None else None
  except TypeError:  # e.g. "bf16": not a dtype name NumPy or JAX knows
    canonical = "unknown"
  if canonical is None:
    return None
  if canonical != "unknown":
    if canonical.name in LOW_BIT_STATE_DTYPES:  # jnp.int8, jnp.int4
      return canonical.name
    if jnp.issubdtype(canonical, jnp.floating):
      return jax.dtypes.canonicalize_dtype(canonical)
  raise ValueError(f"{name} must be {expected}, got {dtype!r}.")


def check_same_structure(what: str, updates: Any, reference: Any) -> None:
  """Clear error when gradients do not match the tree the state was built for."""
  got, want = jax.tree.structure(updates), jax.tree.structure(reference)
  if got != want:
    raise ValueError(
      f"{what}: the gradient tree does not match the tree the optimizer "
      f"state was initialised with.\n  gradients: {got}\n  state:     {want}"
    )
