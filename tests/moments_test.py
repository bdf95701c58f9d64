"""The estimators: tied_moments and variance_ema."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams

STEPS = 100


def _paper_recursions(grads, beta):
  """Float64 NumPy loop of m, v (Adam) and s ([OG25] Prop. 1), zero-initialised."""
  m = v = s = np.zeros_like(grads[0])
  ms, vs, ss = [], [], []
  for g in grads:
    s = beta * s + beta * (1 - beta) * (m - g) ** 2  # Uses m_{k-1}.
    m = beta * m + (1 - beta) * g
    v = beta * v + (1 - beta) * g**2
    ms.append(m), vs.append(v), ss.append(s)
  return np.array(ms), np.array(vs), np.array(ss)


class VarianceIdentityTest(chex.TestCase):
  @parameterized.parameters(0.0, 0.5, 0.9, 0.99, 0.999)
  def test_v_equals_m_squared_plus_s_in_float64(self, beta):
    rng = np.random.default_rng(0)
    grads = rng.normal(1.0, 3.0, size=(300, 50))
    m, v, s = _paper_recursions(grads, beta)
    np.testing.assert_allclose(v, m**2 + s, rtol=1e-12, atol=1e-14)
    if beta > 0:  # With no memory there is no variance part: s = 0.
      self.assertGreater(s.max(), 1.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.5, 0.9, 0.999)
  def test_estimators_reproduce_the_recursions_in_float64(self, beta):
    rng = np.random.default_rng(1)
    grads = rng.normal(1.0, 3.0, size=(120, 7))
    m, v, s = _paper_recursions(grads, beta)
    c = 1 - beta ** np.arange(1, len(grads) + 1)[:, None]
    mean_hat, var_hat = m / c, v / c - (m / c) ** 2
    with jax.enable_x64(True):
      params = jnp.zeros(7, jnp.float64)
      stream = [jnp.asarray(g) for g in grads]
      for tx, debias, want_mean, want_var in (
        (bo.variance_ema(beta, debias=False), False, m, s),
        (bo.tied_moments(beta, debias=False), False, m, v - m**2),
        (bo.variance_ema(beta), True, mean_hat, var_hat),
        (bo.tied_moments(beta), True, mean_hat, var_hat),
      ):
        got, _ = streams.run(self.variant(tx.update), tx.init(params), stream, params)
        self.assertEqual(got.mean.dtype, np.float64)
        np.testing.assert_allclose(got.mean, want_mean, rtol=1e-10, atol=1e-12)
        # tied_moments forms v - m^2 and loses digits to the cancellation;
        # variance_ema does not.
        tol = 1e-12 if isinstance(tx.init(params), bo.VarianceEmaState) else 1e-9
        np.testing.assert_allclose(
          got.variance, want_var, rtol=tol, atol=tol, err_msg=str(debias)
        )


class ClosedFormTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_constant_gradient_has_its_value_as_mean_and_zero_variance(self, estimator):
    tx = estimator(0.9)
    g = jnp.array([3.0, -0.5, 0.0])
    state, update = tx.init(g), self.variant(tx.update)
    for _ in range(20):
      moments, state = update(g, state)
      np.testing.assert_allclose(moments.mean, g, rtol=1e-6)
      np.testing.assert_allclose(moments.variance, 0.0, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_alternating_gradient_has_known_moments(self, estimator):
    # g = +a, -a, +a, ...: with weights w_i = (1-b) b^(k-i) / c_k the debiased
    # mean after an even number of steps is a (1 - b)/(1 + b) * (-1), and
    # the variance is a^2 - mean^2 (since g^2 = a^2 always).
    beta, a, k = 0.8, 2.0, 40
    tx = estimator(beta)
    state, update = tx.init(jnp.zeros(())), self.variant(tx.update)
    for i in range(k):
      moments, state = update(jnp.array(a if i % 2 == 0 else -a), state)
    c = 1 - beta**k
    mean = -a * (1 - beta) / (1 + beta) * (1 - beta**k) / c
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(moments.variance, a**2 - mean**2, rtol=1e-5)

  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_first_step_debiased_is_the_gradient_with_zero_variance(self, estimator):
    g = jnp.array([1.5, -2.0])
    for beta in (0.0, 0.9, 0.999):
      tx = estimator(beta)
      moments, _ = tx.update(g, tx.init(g))
      np.testing.assert_allclose(moments.mean, g, rtol=2e-5)
      np.testing.assert_allclose(moments.variance, 0.0, atol=1e-4)

  def test_variance_ema_has_no_cancellation(self):
    # A large mean with a small spread: v - m^2 in float32 cancels all digits,
    # the variance EMA keeps them.
    rng = np.random.default_rng(0)
    grads = [jnp.asarray(1e4 + rng.normal(size=64), jnp.float32) for _ in range(200)]
    with jax.enable_x64(True):
      ref = bo.variance_ema(0.9)
      x64 = [jnp.asarray(g, jnp.float64) for g in grads]
      want, _ = streams.run(jax.jit(ref.update), ref.init(x64[0]), x64, None)
    errors = {}
    for estimator in (bo.variance_ema, bo.tied_moments):
      tx = estimator(0.9)
      got, _ = streams.run(jax.jit(tx.update), tx.init(grads[0]), grads, None)
      rel = np.abs(got.variance[-1] - want.variance[-1]) / want.variance[-1]
      errors[estimator.__name__] = np.median(rel)
    self.assertLess(errors["variance_ema"], 1e-3)  # mean has ulp 1e-3 here.
    self.assertGreater(errors["tied_moments"], 100 * errors["variance_ema"])


LR = 1e-3
_PATHS = {
  "variance_ema": lambda beta, eps: optax.chain(
    bo.variance_ema(beta), bo.snr_sign_step(eps), optax.scale_by_learning_rate(LR)
  ),
  "tied_moments": lambda beta, eps: optax.chain(
    bo.tied_moments(beta), bo.snr_sign_step(eps), optax.scale_by_learning_rate(LR)
  ),
  "balanced_adam": lambda beta, eps: bo.balanced_adam(LR, beta, eps),
  "optax_adam": lambda beta, eps: optax.adam(LR, b1=beta, b2=beta, eps=eps),
}


def _update(path, grads, state, beta, eps):
  # Hyperparameters are traced arguments, so each path compiles once for all
  # the cases below rather than once per case.
  return _PATHS[path](beta, eps).update(grads, state)


class ThreePathsTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    beta=(0.0, 0.9, 0.999), eps=(1e-8, 1e-12), scale_is_eps=(False, True)
  )
  def test_composed_chains_equal_balanced_adam_and_optax(self, beta, eps, scale_is_eps):
    params = streams.nested_params()
    grads = streams.gradient_stream(
      params, STEPS, scale=eps if scale_is_eps else 1.0, seed=4
    )
    hyper = (jnp.float32(beta), jnp.float32(eps))
    reference = jax.jit(_update, static_argnums=0)
    init = lambda path: _PATHS[path](*hyper).init(params)
    want, _ = streams.run(
      lambda g, s, _: reference("optax_adam", g, s, *hyper),
      init("optax_adam"),
      grads,
      params,
    )
    update = self.variant(_update, static_argnums=0)
    for path in ("variance_ema", "tied_moments", "balanced_adam"):
      got, _ = streams.run(
        lambda g, s, _, path=path: update(path, g, s, *hyper), init(path), grads, params
      )
      streams.assert_leafwise_close(got, want, rtol=2e-5)


class StateTest(chex.TestCase):
  def test_tied_moments_state_is_optax_adam_state(self):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 30, seed=5)
    tx = bo.tied_moments(0.9)
    _, state = streams.run(jax.jit(tx.update), tx.init(params), grads, params)
    _, ref_state = streams.reference(optax.scale_by_adam(0.9, 0.9), grads, params)
    self.assertIsInstance(state, optax.ScaleByAdamState)
    streams.assert_leafwise_close(state, ref_state, rtol=1e-6)

  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_state_dtype_keeps_storage_low_and_arithmetic_high(self, estimator):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 50, seed=6)
    low = estimator(0.99, state_dtype=jnp.bfloat16)
    state = low.init(params)
    self.assertTrue(all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state)[1:]))
    got, state = streams.run(jax.jit(low.update), state, grads, params)
    self.assertTrue(all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state)[1:]))
    self.assertEqual(got.mean["w"].dtype, jnp.float32)  # Emitted like the grads.
    high = estimator(0.99)
    want, _ = streams.run(jax.jit(high.update), high.init(params), grads, params)
    streams.assert_leafwise_close(got.mean, want.mean, rtol=2e-2)

  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_nonfinite_gradient_coordinates_do_not_touch_the_state(self, estimator):
    tx = estimator(0.9)
    g = jnp.array([1.0, 2.0, 3.0])
    _, state = tx.update(g, tx.init(g))
    bad = jnp.array([jnp.nan, jnp.inf, 4.0])
    moments, new_state = tx.update(bad, state)
    for old, new in zip(
      jax.tree.leaves(state)[1:], jax.tree.leaves(new_state)[1:], strict=True
    ):
      np.testing.assert_array_equal(new[:2], old[:2])
      self.assertFalse(np.array_equal(new[2], old[2]))
    np.testing.assert_array_equal(moments.mean[:2], 0.0)
    np.testing.assert_array_equal(moments.variance[:2], 0.0)
    unguarded = estimator(0.9, guard_nonfinite=False)
    _, state = unguarded.update(g, unguarded.init(g))
    _, state = unguarded.update(bad, state)
    self.assertTrue(np.isnan(jax.tree.leaves(state)[1][0]))


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()
