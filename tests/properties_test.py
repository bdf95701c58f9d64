"""Property-based tests over random trees, shapes, dtypes, betas, eps and scales."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given
from hypothesis import strategies as st

import balanced_optax as bo
from tests import streams

# A small menu of shapes (scalars and empty arrays included) keeps JAX's
# per-shape compilation cache warm, so each example costs milliseconds. The
# number of examples is the profile's (conftest.py): 20, or 5 in the fast tier.
SHAPES = ((), (0,), (3,), (2, 3), (1, 0, 2), (4, 1))


@st.composite
def problems(draw, dtypes=(jnp.float32, jnp.bfloat16, jnp.float16), max_log_scale=15):
  """A params tree, a short finite gradient stream and hyperparameters."""
  dtype = draw(st.sampled_from(dtypes))
  shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
  params = {f"p{i}": jnp.zeros(s, dtype) for i, s in enumerate(shapes)}
  # float16 holds 6e-5 .. 6e4: keep its gradients inside that.
  log_scale = (-2, 2) if dtype == jnp.float16 else (-max_log_scale, max_log_scale)
  scale = 10.0 ** draw(st.integers(*log_scale))
  seed = draw(st.integers(0, 2**16))
  steps = draw(st.integers(1, 4))
  grads = streams.gradient_stream(params, steps, scale=scale, seed=seed)
  beta = draw(st.sampled_from((0.0, 0.5, 0.9, 0.99, 0.9999)))
  eps = draw(st.sampled_from((0.0, 1e-12, 1e-8, 1e-3)))
  return params, grads, beta, eps


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


@given(problems(), st.booleans(), st.sampled_from((None, jnp.bfloat16, jnp.float32)))
def test_finite_inputs_never_give_nan_or_inf(problem, scale_safe, state_dtype):
  params, grads, beta, eps = problem
  tx = bo.balanced_adam(1e-3, beta, eps, scale_safe=scale_safe, state_dtype=state_dtype)
  updates, state = streams.run(tx.update, tx.init(params), grads, params)
  assert _all_finite(updates) and _all_finite(state)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
    assert u.dtype == p.dtype  # Updates come back in the params' dtype.


@given(problems(dtypes=(jnp.float32,), max_log_scale=30))
def test_scale_safe_is_finite_across_float32s_range(problem):
  params, grads, beta, eps = problem
  tx = bo.balanced_adam(1e-3, beta, eps, scale_safe=True)
  updates, state = streams.run(tx.update, tx.init(params), grads, params)
  assert _all_finite(updates) and _all_finite(state)


@given(problems(), st.sampled_from((bo.tied_moments, bo.variance_ema)), st.booleans())
def test_estimated_variance_is_never_negative(problem, estimator, debias):
  params, grads, beta, _ = problem
  tx = estimator(beta, debias=debias)
  moments, state = streams.run(tx.update, tx.init(params), grads, params)
  for v in jax.tree.leaves(moments.variance):
    assert np.all(np.asarray(v, np.float32) >= 0)
  assert _all_finite(moments) and _all_finite(state)


@given(
  problems(
    dtypes=(jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64), max_log_scale=6
  ),
  st.sampled_from(("tied", "ema")),
)
def test_fused_and_composed_paths_agree(problem, estimator_name):
  params, grads, beta, eps = problem
  estimator = {"tied": bo.tied_moments, "ema": bo.variance_ema}[estimator_name]
  composed = optax.chain(
    estimator(beta), bo.snr_sign_step(eps), optax.scale_by_learning_rate(1.0)
  )
  fused = bo.balanced_adam(1.0, beta, eps)
  got, _ = streams.run(composed.update, composed.init(params), grads, params)
  want, _ = streams.run(fused.update, fused.init(params), grads, params)
  # Updates are O(1) per coordinate (lr = 1): compare on that absolute scale.
  # The bias correction 1 - beta^k carries float32's absolute rounding (~1e-7)
  # relative to its size ~k (1 - beta), so beta near 1 widens the tolerance.
  # bfloat16 and float16 params store or return the update rounded to them.
  dtype = jax.tree.leaves(params)[0].dtype
  low = {jnp.dtype(jnp.bfloat16): 2e-2, jnp.dtype(jnp.float16): 2e-3}.get(dtype, 0)
  tol = max(1e-4, 3e-7 / (1 - beta), low)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.dtype == w.dtype == dtype
    np.testing.assert_allclose(
      np.asarray(g, np.complex128), np.asarray(w, np.complex128), rtol=tol, atol=tol
    )


@given(
  problems(dtypes=(jnp.float32, jnp.complex64), max_log_scale=30),
  st.sampled_from((bo.tied_moments, bo.variance_ema)),
)
def test_composed_paths_never_turn_finite_gradients_into_nan(problem, estimator):
  # Issue 12 item 3: |g|^2 overflows float32 from |g| ~ 1.8e19 (v - m^2 was
  # inf - inf); the moments say +inf variance there and the step is 0.
  params, grads, beta, eps = problem
  tx = optax.chain(estimator(beta), bo.snr_sign_step(eps))
  updates, state = streams.run(tx.update, tx.init(params), grads, params)
  assert _all_finite(updates)
  # The state may hold v = +inf where g^2 overflowed (as optax.adam's), never NaN.
  assert not any(bool(jnp.isnan(x).any()) for x in jax.tree.leaves(state))


@given(
  problems(dtypes=(jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64)),
  st.sampled_from((bo.tied_moments, bo.variance_ema)),
)
def test_estimators_emit_at_least_float32_and_a_real_variance(problem, estimator):
  params, grads, beta, _ = problem
  tx = estimator(beta)
  moments, _ = streams.run(tx.update, tx.init(params), grads, params)
  for m, v, p in zip(
    jax.tree.leaves(moments.mean),
    jax.tree.leaves(moments.variance),
    jax.tree.leaves(params),
    strict=True,
  ):
    assert m.dtype == jnp.promote_types(p.dtype, jnp.float32)
    assert v.dtype == np.float32
    assert not jnp.iscomplexobj(v)
