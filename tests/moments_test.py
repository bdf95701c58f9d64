"""The estimators: tied_moments and variance_ema."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
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

  @chex.variants(with_jit=True)
  def test_estimators_reproduce_the_recursions_in_float64(self):
    self._assert_estimators_reproduce_the_recursions(beta=0.9)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.5, 0.9, 0.999)
  @pytest.mark.slow
  def test_estimators_reproduce_the_recursions_in_float64_in_every_case(self, beta):
    self._assert_estimators_reproduce_the_recursions(beta)

  def _assert_estimators_reproduce_the_recursions(self, beta):
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

  def test_variance_ema_first_step_is_exact_for_every_form_of_beta(self):
    # alpha_1 = 1: the first estimate is the gradient itself, with zero
    # variance, whether beta is a Python float (1 - beta rounds in float64)
    # or an injected float32 array (optax.inject_hyperparams). The Python
    # float gave mean 0.99999976 g and variance 2.4e-7 g^2.
    g = jnp.array([1.0, -3.0, 0.1])
    for beta in (0.9, 0.95, 0.999, jnp.float32(0.95)):
      tx = bo.variance_ema(beta)
      _, state = tx.update(g, tx.init(g))
      np.testing.assert_array_equal(state.mean, g)
      np.testing.assert_array_equal(state.variance, jnp.zeros(3))

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
  @chex.variants(with_jit=True)
  def test_composed_chains_equal_balanced_adam_and_optax(self):
    self._assert_paths_equal_optax(beta=0.9, eps=1e-8, scale_is_eps=False)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    beta=(0.0, 0.9, 0.999), eps=(1e-8, 1e-12), scale_is_eps=(False, True)
  )
  @pytest.mark.slow
  def test_composed_chains_equal_balanced_adam_and_optax_in_every_case(
    self, beta, eps, scale_is_eps
  ):
    self._assert_paths_equal_optax(beta, eps, scale_is_eps)

  def _assert_paths_equal_optax(self, beta, eps, scale_is_eps):
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
  def test_nonfinite_gradient_coordinates_hold_the_debiased_moments(self, estimator):
    tx = estimator(0.9)
    g = jnp.array([1.0, 2.0, 3.0])
    moments, state = tx.update(g, tx.init(g))
    g2 = jnp.array([2.0, 1.0, 3.0])
    before, state = tx.update(g2, state)
    bad = jnp.array([jnp.nan, jnp.inf, 4.0])
    moments, new_state = tx.update(bad, state)
    # Held: the emitted (debiased) mean and variance are those of the step
    # before; the finite coordinate moves on.
    np.testing.assert_allclose(moments.mean[:2], before.mean[:2], rtol=1e-6)
    np.testing.assert_allclose(moments.variance[:2], before.variance[:2], rtol=1e-5)
    self.assertGreater(float(moments.variance[0]), 0.1)  # Not zeroed.
    self.assertNotAlmostEqual(float(moments.mean[2]), float(before.mean[2]))
    if isinstance(
      state, optax.ScaleByAdamState
    ):  # Raw EMAs: m_k = m_{k-1} c_k/c_{k-1}.
      ratio = (1 - 0.9**3) / (1 - 0.9**2)
      np.testing.assert_allclose(new_state.mu[:2], state.mu[:2] * ratio, rtol=1e-6)
      np.testing.assert_allclose(new_state.nu[:2], state.nu[:2] * ratio, rtol=1e-6)
    else:
      np.testing.assert_array_equal(new_state.mean[:2], state.mean[:2])
      np.testing.assert_array_equal(new_state.variance[:2], state.variance[:2])
    unguarded = estimator(0.9, guard_nonfinite=False)
    _, state = unguarded.update(g, unguarded.init(g))
    _, state = unguarded.update(bad, state)
    self.assertTrue(np.isnan(jax.tree.leaves(state)[1][0]))

  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_nonfinite_before_any_finite_gradient_gives_zero_moments(self, estimator):
    tx = estimator(0.9)
    bad = jnp.array([jnp.nan, 1.0])
    moments, state = tx.update(bad, tx.init(bad))
    moments, state = tx.update(bad, state)
    np.testing.assert_array_equal(moments.mean[0], 0.0)
    np.testing.assert_array_equal(moments.variance[0], 0.0)
    np.testing.assert_allclose(moments.mean[1], 1.0, rtol=1e-6)

  def test_guard_and_bias_correction_agree_on_every_path(self):
    # Issue 12 item 7: a constant gradient 1 with one NaN step at coordinate 0.
    # Before, variance_ema gave 1.0 afterwards and the fused path and
    # tied_moments 0.837; with held debiased moments all give 1.
    g, bad = jnp.ones(2), jnp.array([jnp.nan, 1.0])
    stream = [g, g, bad, g, g]
    paths = {
      "fused": bo.balanced_adam(1.0, 0.9, eps=0.0),
      "tied": optax.chain(bo.tied_moments(0.9), bo.snr_sign_step(eps=0.0)),
      "ema": optax.chain(bo.variance_ema(0.9), bo.snr_sign_step(eps=0.0)),
    }
    for name, tx in paths.items():
      got, _ = streams.run(jax.jit(tx.update), tx.init(g), stream, g)
      sign = -1.0 if name == "fused" else 1.0
      np.testing.assert_allclose(got, sign * np.ones((5, 2)), rtol=1e-6, err_msg=name)


class DtypeTest(chex.TestCase):
  """Issue 12 items 1-4 at the estimator: what is emitted, in which dtype."""

  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_float16_moments_are_emitted_in_float32_without_overflow(self, estimator):
    # Gradients ~1000 with noise ~400: a float16 variance (1.6e5) overflows;
    # gradients ~1e-4: a float16 variance (1e-9) underflows.
    rng = np.random.default_rng(2)
    for scale in (1e3, 1e-4):
      raw = scale * (1 + 0.4 * rng.normal(size=(30, 6)))
      grads = [jnp.asarray(g, jnp.float16) for g in raw]
      tx = estimator(0.9)
      got, state = streams.run(jax.jit(tx.update), tx.init(grads[0]), grads, None)
      self.assertEqual(got.mean.dtype, np.float32)
      self.assertEqual(got.variance.dtype, np.float32)
      self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(state)[1:]))
      f16 = np.asarray(raw.astype(np.float16), np.float64)
      m, v, _ = _paper_recursions(f16, 0.9)
      c = 1 - 0.9 ** np.arange(1, 31)[:, None]
      want_var = v / c - (m / c) ** 2
      np.testing.assert_allclose(got.variance[5:], want_var[5:], rtol=1e-3)
      self.assertGreater(want_var[5:].min() * scale**-2, 1e-3)

  def test_huge_finite_gradients_give_no_nan(self):
    # Issue 12 item 3: g = 3e19 overflows v = g^2 in float32; v - m^2 was inf - inf.
    g = jnp.array([3e19, -3e19, 1.0], jnp.float32)
    for estimator in (bo.tied_moments, bo.variance_ema):
      tx = estimator(0.9)
      moments, _ = streams.run(jax.jit(tx.update), tx.init(g), [g] * 3, None)
      self.assertFalse(np.isnan(moments.variance).any(), estimator.__name__)
      self.assertFalse(np.isnan(moments.mean).any(), estimator.__name__)
      np.testing.assert_allclose(moments.mean[-1], g, rtol=1e-6)
    tied = optax.chain(bo.tied_moments(0.9), bo.snr_sign_step())
    got, _ = streams.run(jax.jit(tied.update), tied.init(g), [g] * 3, None)
    want, _ = streams.reference(optax.scale_by_adam(0.9, 0.9), [g] * 3, g)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # 0 where v overflowed.

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("tied_moments", bo.tied_moments), ("variance_ema", bo.variance_ema)
  )
  def test_complex_mean_and_real_variance_match_a_float64_reference(self, estimator):
    rng = np.random.default_rng(3)
    raw = (1 + 2j) + rng.normal(size=(40, 5)) + 1j * rng.normal(size=(40, 5))
    grads = [jnp.asarray(g, jnp.complex64) for g in raw]
    tx = estimator(0.8)
    params = jnp.zeros(5, jnp.complex64)
    got, state = streams.run(self.variant(tx.update), tx.init(params), grads, params)
    self.assertEqual(got.mean.dtype, np.complex64)
    self.assertEqual(got.variance.dtype, np.float32)
    c = 1 - 0.8 ** np.arange(1, 41)[:, None]
    m = v = 0
    means, variances = [], []
    for k, g in enumerate(raw):
      m, v = 0.8 * m + 0.2 * g, 0.8 * v + 0.2 * np.abs(g) ** 2
      means.append(m / c[k]), variances.append(v / c[k] - np.abs(m / c[k]) ** 2)
    np.testing.assert_allclose(got.mean, np.array(means), rtol=1e-5)
    np.testing.assert_allclose(got.variance, np.array(variances), rtol=1e-4, atol=1e-5)
    self.assertGreater(np.min(variances[5:]), 0.3)  # E|g - mean|^2 = 2 here.
    if isinstance(state, optax.ScaleByAdamState):
      _, ref_state = streams.reference(optax.scale_by_adam(0.8, 0.8), grads, params)
      streams.assert_leafwise_close(state, ref_state, rtol=1e-6)

  def test_complex_params_refuse_a_state_dtype_with_no_complex_form(self):
    tx = bo.tied_moments(0.9, state_dtype=jnp.bfloat16)
    with self.assertRaisesRegex(ValueError, "state_dtype.*complex"):
      tx.init(jnp.zeros(2, jnp.complex64))
    tx = bo.variance_ema(0.9, state_dtype=jnp.float32)
    state = tx.init(jnp.zeros(2, jnp.complex64))
    self.assertEqual(state.mean.dtype, jnp.complex64)
    self.assertEqual(state.variance.dtype, jnp.float32)


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()
