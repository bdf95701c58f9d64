"""Shared test inputs: nested parameter trees and reproducible gradient streams."""

import jax
import jax.numpy as jnp
import numpy as np


def nested_params(dtype=jnp.float32):
  """A tree with matrices, vectors, a scalar, a list and nesting."""
  return {
    "w": jnp.zeros((4, 3), dtype),
    "layers": [jnp.zeros((5,), dtype), jnp.zeros((), dtype)],
    "head": {"b": jnp.zeros((2, 1, 3), dtype)},
  }


def gradient_stream(params, num_steps, scale=1.0, seed=0, noise=2.0):
  """num_steps gradient trees: a fixed per-coordinate mean plus Gaussian noise.

  Complex params get complex gradients, real and imaginary parts drawn alike.

  Gradients do not depend on the parameters, so errors cannot compound through
  the trajectory and each step's update can be compared on its own.
  """
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(params)

  def draw(x):  # Complex params get complex gradients (both parts random).
    z = rng.normal(size=x.shape)
    return z + 1j * rng.normal(size=x.shape) if jnp.iscomplexobj(x) else z

  means = [draw(x) for x in leaves]
  stream = []
  for _ in range(num_steps):
    step = [
      jnp.asarray(scale * (m + noise * draw(x)), x.dtype)
      for m, x in zip(means, leaves, strict=True)
    ]
    stream.append(jax.tree.unflatten(treedef, step))
  return stream


def run(update_fn, init_state, grads, params):
  """Applies update_fn along the stream; returns (stacked updates, final state)."""
  state, outputs = init_state, []
  for g in grads:
    u, state = update_fn(g, state, params)
    outputs.append(u)
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *outputs)
  return stacked, state


def reference(tx, grads, params):
  """Runs an optax reference optimizer jitted (the reference needs no variants)."""
  return run(jax.jit(tx.update), tx.init(params), grads, params)


def assert_leafwise_close(got, want, rtol):
  """Each leaf: max |got - want| <= rtol * max |want| (plus a tiny floor).

  The right yardstick for EMAs, whose coordinates can cancel to near zero: an
  error of a few ulps of the leaf's scale is float rounding, even where it is
  large relative to one tiny coordinate.
  """
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(
    jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
  ):
    # complex128 for complex leaves: float64 would drop the imaginary part.
    wide = np.complex128 if np.iscomplexobj(g) or np.iscomplexobj(w) else np.float64
    g, w = np.asarray(g, wide), np.asarray(w, wide)
    assert g.shape == w.shape, (path, g.shape, w.shape)
    if g.size == 0:
      continue
    err, size = np.abs(g - w).max(), np.abs(w).max()
    assert err <= rtol * size + 1e-30, (
      f"{jax.tree_util.keystr(path)}: max error {err:.3g} > {rtol:g} * {size:.3g}"
    )
