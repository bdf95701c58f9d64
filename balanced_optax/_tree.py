"""Small tree helpers shared by the transforms (private)."""

from typing import Any

import jax
import jax.numpy as jnp


def upcast(tree: Any) -> Any:
  """Each leaf in at least float32: the arithmetic dtype of the transforms.

  Low-precision state (``state_dtype=jnp.bfloat16``) and low-precision
  gradients are read into float32, updated there, and cast back on the way
  out, so an EMA increment of (1 - beta) * g is not rounded away in bfloat16.
  """
  return jax.tree.map(lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), tree)


def zeros_for_state(params: Any, state_dtype: Any) -> Any:
  """Zero moments: in state_dtype, or by default in the params' dtype.

  The default makes one exception: float16 params get float32 moments, since
  float16 tops out at 65504 and g**2 passes that for any |g| > 256.
  """
  if state_dtype is not None:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=state_dtype), params)
  return jax.tree.map(
    lambda x: jnp.zeros_like(x, dtype=jnp.float32 if x.dtype == jnp.float16 else None),
    params,
  )


def where_finite(grads: Any, new: Any, fallback: Any) -> Any:
  """``new`` where the gradient is finite, ``fallback`` elsewhere (leafwise)."""
  return jax.tree.map(
    lambda g, n, f: jnp.where(jnp.isfinite(g), n, f), grads, new, fallback
  )


def unzip(template: Any, tree_of_tuples: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree whose leaves are n-tuples into n trees shaped like template."""
  return tuple(
    jax.tree.map(lambda _, t, i=i: t[i], template, tree_of_tuples) for i in range(n)
  )
