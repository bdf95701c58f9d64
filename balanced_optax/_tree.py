"""Tree and dtype helpers shared by the transforms (private)."""

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from balanced_optax import _checks


def compute_dtype(dtype: Any) -> np.dtype:
  """The arithmetic dtype for values stored in ``dtype``: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def real_dtype(dtype: Any) -> np.dtype:
  """The real dtype of ``dtype``'s precision (complex64 -> float32)."""
  return jnp.finfo(dtype).dtype


def as_arrays(tree: Any) -> Any:
  """Python scalars as jax arrays; anything with a shape and a dtype as it is."""
  # Abstract leaves (jax.ShapeDtypeStruct) pass: init takes them, as optax's.
  return jax.tree.map(
    lambda x: x if hasattr(x, "shape") and hasattr(x, "dtype") else jnp.asarray(x),
    tree,
  )


def real_hyperparameter(value: Any) -> Any:
  """The real part of a hyperparameter cast to complex by inject_hyperparams."""
  return jnp.real(value) if np.iscomplexobj(value) else value


def upcast(tree: Any) -> Any:
  """Each leaf in its arithmetic dtype (:func:`compute_dtype`)."""
  # An EMA increment (1 - beta) g would be rounded away in bfloat16.
  return jax.tree.map(lambda x: x.astype(compute_dtype(x.dtype)), tree)


def _state_dtype_for(param_dtype: Any, state_dtype: Any, real: bool) -> np.dtype:
  if state_dtype is None:
    # float16 tops out at 65504 and g**2 passes that for any |g| > 256.
    dtype = jnp.float32 if param_dtype == jnp.float16 else param_dtype
  elif jnp.issubdtype(param_dtype, jnp.complexfloating):
    # A real state_dtype names the precision; complex params keep their phase.
    if state_dtype not in (jnp.float32, jnp.float64):
      raise ValueError(
        f"state_dtype must be float32 or float64 for complex params "
        f"({jnp.dtype(param_dtype).name}): there is no complex {state_dtype.name}; "
        f"got {state_dtype.name}."
      )
    dtype = jnp.complex64 if state_dtype == jnp.float32 else jnp.complex128
  else:
    dtype = state_dtype
  dtype = jax.dtypes.canonicalize_dtype(dtype)
  return real_dtype(dtype) if real else dtype


def zeros_for_state(params: Any, state_dtype: Any, *, real: bool = False) -> Any:
  """Zero moments in ``state_dtype`` (``None``: the params', float32 for float16).

  ``real=True`` gives the real dtype of that precision (for a variance).
  """
  # zeros_like, not zeros(shape): the state keeps the params' sharding.
  return jax.tree.map(
    lambda x: jnp.zeros_like(x, dtype=_state_dtype_for(x.dtype, state_dtype, real)),
    as_arrays(params),
  )


def update_dtype(grad: Any, state: Any, param: Any = None) -> np.dtype:
  """The dtype of optax.adam's update for one leaf: promote(params, grads)."""
  grad_dtype = jnp.dtype(grad.dtype)
  if param is not None:
    return jnp.promote_types(param.dtype, grad_dtype)
  # Without params the stored moment stands in for them; float32 state with
  # float16 gradients is what float16 params get by default.
  state_dtype = jnp.dtype(state.dtype)
  if grad_dtype == jnp.float16 and state_dtype == jnp.float32:
    return grad_dtype
  return jnp.promote_types(state_dtype, grad_dtype)


def update_dtypes(grads: Any, state: Any, params: Any = None) -> tuple[np.dtype, ...]:
  """:func:`update_dtype` for every leaf, in ``grads``' flat order."""
  grad_leaves, treedef = jax.tree.flatten(grads)
  state_leaves = treedef.flatten_up_to(state)
  param_leaves: list[Any] = [None] * len(grad_leaves)
  if params is not None:
    try:
      param_leaves = [
        jnp.asarray(p) if isinstance(p, numbers.Number) else p
        for p in treedef.flatten_up_to(params)
      ]
    except ValueError:  # A wrapper passed params of another shape: ignore them.
      pass
  param_leaves = [p if hasattr(p, "dtype") else None for p in param_leaves]
  return tuple(
    update_dtype(g, s, p)
    for g, s, p in zip(grad_leaves, state_leaves, param_leaves, strict=True)
  )


def gradients(
  what: str, updates: Any, moment: Any, params: Any
) -> tuple[Any, tuple[np.dtype, ...]]:
  """The gradients as arrays, checked against a moment of the state, and the
  dtype of optax.adam's update for each leaf (see :func:`update_dtype`)."""
  _checks.check_same_structure(what, updates, moment)
  updates = as_arrays(updates)
  return updates, update_dtypes(updates, moment, params)


def guard(grads: Any, new: Any, old: Any, hold: Any = 1) -> Any:
  """``new`` where the gradient is finite, ``hold * old`` elsewhere (leafwise).

  A complex gradient is finite where both its parts are (``jnp.isfinite``).
  """
  return jax.tree.map(
    lambda g, n, o: jnp.where(jnp.isfinite(g), n, hold * o), grads, new, old
  )


def hold_factor(beta, count):
  """:math:`c_k / c_{k-1}`: it keeps a debiased moment where g is not finite."""
  # At the first step the moments are zero and stay zero; any finite factor does.
  c_now, c_before = 1 - beta**count, 1 - beta ** (count - 1)
  return jnp.where(count > 1, c_now / jnp.where(count > 1, c_before, 1), 1)


def unzip(template: Any, tree_of_tuples: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree whose leaves are n-tuples into n trees shaped like template."""
  return tuple(
    jax.tree.map(lambda _, t, i=i: t[i], template, tree_of_tuples) for i in range(n)
  )


def abs2(x: jax.Array) -> jax.Array:
  """|x|², real, without the square root and re-square of jnp.abs."""
  if jnp.iscomplexobj(x):
    return x.real * x.real + x.imag * x.imag
  return x * x


def ema(beta, new: jax.Array, old: jax.Array) -> jax.Array:
  """``(1 - beta) new + beta old``, one EMA step, with ``0 * inf = 0``."""
  # With beta = 0 a moment that overflowed to inf at the last step must be
  # forgotten, not come back as 0 * inf = NaN. A static beta costs nothing
  # extra; a traced one adds one select.
  if isinstance(beta, numbers.Real):
    b = float(beta)
    return new if b == 0 else (1 - b) * new + b * old
  return (1 - beta) * new + jnp.where(beta == 0, jnp.zeros_like(old), beta * old)
