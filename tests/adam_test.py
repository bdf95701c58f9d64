"""scale_by_balanced_adam: state compatibility, scale safety, dtypes, guards."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams


def _relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


class OptaxStateCompatibilityTest(chex.TestCase):
  @parameterized.parameters(0.9, 0.999)
  def test_optax_adam_state_continues_under_balanced_adam_and_back(self, beta):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 90, seed=8)
    adam, ours = optax.adam(1e-3, b1=beta, b2=beta), bo.balanced_adam(1e-3, beta)
    want, want_state = streams.reference(adam, grads, params)
    # 30 steps of optax.adam, 30 of balanced_adam on its state, 30 of optax.adam.
    first, state = streams.run(
      jax.jit(adam.update), adam.init(params), grads[:30], params
    )
    second, state = streams.run(jax.jit(ours.update), state, grads[30:60], params)
    third, state = streams.run(jax.jit(adam.update), state, grads[60:], params)
    got = jax.tree.map(lambda *x: np.concatenate(x), first, second, third)
    streams.assert_leafwise_close(got, want, rtol=1e-5)
    streams.assert_leafwise_close(state, want_state, rtol=1e-5)
    self.assertEqual(jax.tree.structure(state), jax.tree.structure(want_state))


class ScaleSafeTest(chex.TestCase):
  def _updates(self, tx, scale, steps=30):
    params = {"w": jnp.zeros((64,)), "b": jnp.zeros((8, 3))}
    grads = [
      jax.tree.map(lambda g: g * scale, g)
      for g in streams.gradient_stream(params, steps, seed=9)
    ]
    got, _ = streams.run(jax.jit(tx.update), tx.init(params), grads, params)
    return np.concatenate([got["w"].ravel(), got["b"].ravel()])

  def test_equals_plain_adam_at_ordinary_scales(self):
    plain = self._updates(bo.scale_by_balanced_adam(0.95), 1.0)
    safe = self._updates(bo.scale_by_balanced_adam(0.95, scale_safe=True), 1.0)
    self.assertLess(_relative_error(safe, plain), 1e-6)

  @parameterized.parameters(1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30)
  def test_invariant_to_a_constant_gradient_scale_with_zero_eps(self, scale):
    tx = bo.scale_by_balanced_adam(0.95, eps=0.0, scale_safe=True)
    self.assertLess(
      _relative_error(self._updates(tx, scale), self._updates(tx, 1.0)), 1e-5
    )

  @parameterized.parameters(1e-25, 1e25)
  def test_plain_adam_breaks_where_scale_safe_does_not(self, scale):
    # The reason scale_safe exists: g^2 under/overflows float32.
    for tx in (
      optax.scale_by_adam(0.95, 0.95, eps=0.0),
      bo.scale_by_balanced_adam(0.95, eps=0.0),
    ):
      broken = self._updates(tx, scale)
      ok = self._updates(tx, 1.0)
      self.assertTrue(
        not np.all(np.isfinite(broken)) or _relative_error(broken, ok) > 0.1
      )

  def test_state_holds_the_root_of_adams_second_moment(self):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 40, seed=10)
    tx = bo.scale_by_balanced_adam(0.9, scale_safe=True)
    _, state = streams.run(jax.jit(tx.update), tx.init(params), grads, params)
    _, ref = streams.reference(optax.scale_by_adam(0.9, 0.9), grads, params)
    self.assertIsInstance(state, bo.ScaleSafeAdamState)
    streams.assert_leafwise_close(state.mu, ref.mu, rtol=1e-6)
    streams.assert_leafwise_close(
      jax.tree.map(jnp.square, state.rms), ref.nu, rtol=1e-5
    )


def _float64_guarded_adam(grads, beta, eps):
  """numpy float64 reference of the guard's definition, on one flat array.

  A non-finite g_k counts as the current debiased moments m̂_{k-1}, v̂_{k-1}
  (zero before any finite gradient).
  """
  m = v = np.zeros_like(np.asarray(grads[0], np.float64))
  updates = []
  for k, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64)
    c_prev = 1 - beta ** (k - 1)
    m_hat = m / c_prev if k > 1 else m
    v_hat = v / c_prev if k > 1 else v
    finite = np.isfinite(g)
    g1 = np.where(finite, g, m_hat)
    g2 = np.where(finite, g * g, v_hat)
    m = beta * m + (1 - beta) * g1
    v = beta * v + (1 - beta) * g2
    c = 1 - beta**k
    updates.append(m / c / (np.sqrt(v / c) + eps))
  return np.stack(updates), m, v


class GuardTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_constant_gradient_with_a_nonfinite_step_keeps_its_debiased_moments(self):
    self._assert_constant_gradient_keeps_its_debiased_moments(scale_safe=True)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  @pytest.mark.slow
  def test_constant_gradient_keeps_its_debiased_moments_in_every_case(self, scale_safe):
    self._assert_constant_gradient_keeps_its_debiased_moments(scale_safe)

  def _assert_constant_gradient_keeps_its_debiased_moments(self, scale_safe):
    beta, value = 0.9, 0.7
    tx = bo.scale_by_balanced_adam(beta, eps=0.0, scale_safe=scale_safe)
    update = self.variant(tx.update)
    g = jnp.full(4, value)
    state = tx.init(g)
    for _ in range(5):
      u, state = update(g, state)
    bad = jnp.array([jnp.nan, jnp.inf, -jnp.inf, value])
    for k in range(6, 9):
      u, state = update(bad, state)
      c = 1 - beta**k
      # The debiased mean stays the constant (only rounding away from it).
      np.testing.assert_allclose(state.mu / c, value, rtol=1e-6)
      second = state.rms**2 if scale_safe else state.nu
      np.testing.assert_allclose(second / c, value**2, rtol=1e-6)
      # So every coordinate keeps the step a constant gradient gives: 1.
      np.testing.assert_allclose(u, 1.0, rtol=1e-6)

  def test_nonfinite_before_any_finite_gradient_gives_zero_moments_and_step(self):
    tx = bo.scale_by_balanced_adam(0.9)
    g = jnp.array([jnp.nan, 2.0])
    u, state = tx.update(g, tx.init(g))
    u, state = tx.update(g, state)
    np.testing.assert_array_equal(u[0], 0.0)
    np.testing.assert_array_equal(state.mu[0], 0.0)
    np.testing.assert_array_equal(state.nu[0], 0.0)
    np.testing.assert_allclose(u[1], 1.0, rtol=1e-6)
    # The first finite g (k = 3) starts from zero moments under the shared
    # count's bias correction: m̂ = (1-b) g / c_3, v̂ = (1-b) g^2 / c_3.
    u, state = tx.update(jnp.array([3.0, 2.0]), state)
    np.testing.assert_allclose(u[0], np.sqrt(0.1 / (1 - 0.9**3)), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_scattered_nonfinite_gradients_match_the_float64_definition(self, scale_safe):
    beta, eps, steps = 0.8, 1e-8, 40
    rng = np.random.default_rng(21)
    grads = rng.normal(1.0, 2.0, size=(steps, 16))
    bad = rng.random((steps, 16)) < 0.15
    grads[bad] = rng.choice([np.nan, np.inf, -np.inf], size=bad.sum())
    grads[:3, 0] = np.nan  # A coordinate with no finite gradient at first.
    tx = bo.scale_by_balanced_adam(beta, eps, scale_safe=scale_safe)
    update = self.variant(tx.update)
    state, got = tx.init(jnp.zeros(16)), []
    for g in grads:
      u, state = update(jnp.asarray(g, jnp.float32), state)
      got.append(u)
    want, m, v = _float64_guarded_adam(grads, beta, eps)
    np.testing.assert_allclose(np.stack(got), want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(state.mu, m, rtol=2e-5, atol=1e-6)
    second = state.rms**2 if scale_safe else state.nu
    np.testing.assert_allclose(second, v, rtol=2e-5, atol=1e-6)
    chex.assert_tree_all_finite((got, state))

  @chex.variants(with_jit=True)
  def test_guard_changes_nothing_on_finite_gradients(self):
    self._assert_guard_changes_nothing_on_finite_gradients(scale_safe=False)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  @pytest.mark.slow
  def test_guard_changes_nothing_on_finite_gradients_in_every_case(self, scale_safe):
    self._assert_guard_changes_nothing_on_finite_gradients(scale_safe)

  def _assert_guard_changes_nothing_on_finite_gradients(self, scale_safe):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 60, seed=22)
    results = []
    for guard in (True, False):
      tx = bo.scale_by_balanced_adam(0.9, scale_safe=scale_safe, guard_nonfinite=guard)
      results.append(
        streams.run(self.variant(tx.update), tx.init(params), grads, params)
      )
    chex.assert_trees_all_close(results[0], results[1], rtol=1e-7, atol=0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_unguarded_equals_optax_adam_on_a_stream_with_nans(self):
    rng = np.random.default_rng(23)
    grads = rng.normal(size=(20, 6)).astype(np.float32)
    grads[5, 1], grads[9, 4], grads[12, 2] = np.nan, np.inf, -np.inf
    grads = [jnp.asarray(g) for g in grads]
    params = jnp.zeros(6)
    tx = bo.balanced_adam(1e-2, 0.9, guard_nonfinite=False)
    got, state = streams.run(self.variant(tx.update), tx.init(params), grads, params)
    want, want_state = streams.reference(optax.adam(1e-2, 0.9, 0.9), grads, params)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    self.assertTrue(np.isnan(got[-1, [1, 2, 4]]).all())
    np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(state[0].nu, want_state[0].nu, rtol=1e-5, equal_nan=True)

  def test_apply_if_finite_skips_the_whole_step(self):
    params = jnp.zeros(3)
    tx = optax.apply_if_finite(bo.balanced_adam(1e-2, 0.9), max_consecutive_errors=5)
    state = tx.init(params)
    u, state = tx.update(jnp.array([1.0, 2.0, 3.0]), state, params)
    inner = state.inner_state
    u, state = tx.update(jnp.array([1.0, jnp.nan, 3.0]), state, params)
    np.testing.assert_array_equal(u, 0.0)
    chex.assert_trees_all_equal(state.inner_state, inner)
    self.assertEqual(int(state.notfinite_count), 1)

  @parameterized.parameters(False, True)
  def test_zero_eps_with_zero_gradients_gives_zero_updates(self, scale_safe):
    tx = bo.balanced_adam(1e-3, 0.9, eps=0.0, scale_safe=scale_safe)
    params = streams.nested_params()
    state = tx.init(params)
    for _ in range(3):
      u, state = jax.jit(tx.update)(params, state, params)  # params are zeros.
      chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    chex.assert_tree_all_finite(state)


class HugeGradientTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(scale_safe=(False, True), guard=(False, True))
  def test_huge_finite_gradients_never_give_nan(self, scale_safe, guard):
    g = jnp.array([3e19, -3e19, 3e38, 1.0], jnp.float32)
    tx = bo.scale_by_balanced_adam(0.9, scale_safe=scale_safe, guard_nonfinite=guard)
    update, state = self.variant(tx.update), tx.init(g)
    ref = optax.scale_by_adam(0.9, 0.9)
    ref_state = ref.init(g)
    for _ in range(5):
      u, state = update(g, state)
      want, ref_state = ref.update(g, ref_state)
      chex.assert_tree_all_finite(u)
      if scale_safe:  # |g|^2 is never formed: the step of a constant g, 1.
        np.testing.assert_allclose(u, [1.0, -1.0, 1.0, 1.0], rtol=1e-5)
      else:  # v overflows to inf and the step is 0, as optax.adam's.
        np.testing.assert_allclose(u, want, rtol=1e-6)
        np.testing.assert_array_equal(u[:3], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(path=("fused", "tied_moments", "variance_ema"), traced=(0, 1))
  def test_memoryless_beta_forgets_an_overflowed_moment(self, path, traced):
    # beta = 0 and a g whose square overflows: v = inf, then 0 * inf was NaN
    # at the next step on the fused and tied paths (as in optax.adam, b2 = 0).
    make = {
      "fused": lambda beta: bo.scale_by_balanced_adam(beta, 0.0),
      "tied_moments": lambda beta: optax.chain(
        bo.tied_moments(beta), bo.snr_sign_step(0.0)
      ),
      "variance_ema": lambda beta: optax.chain(
        bo.variance_ema(beta), bo.snr_sign_step(0.0)
      ),
    }[path]
    tx = optax.inject_hyperparams(make)(beta=0.0) if traced else make(0.0)
    gs = [jnp.array([2.7e19, 1.0], jnp.float32), jnp.array([-1.3e19, -2.0])]
    state, update = tx.init(gs[0]), self.variant(tx.update)
    u, state = update(gs[0], state)
    u, state = update(gs[1], state)
    # No memory: the step is the sign of the last gradient.
    np.testing.assert_allclose(u, [-1.0, -1.0], rtol=1e-6)

  @parameterized.parameters(False, True)
  def test_huge_complex_gradients_never_give_nan(self, scale_safe):
    g = jnp.array([3e19 + 4e19j, 1.0 - 1.0j], jnp.complex64)
    tx = bo.scale_by_balanced_adam(0.9, scale_safe=scale_safe)
    state = tx.init(g)
    for _ in range(3):
      u, state = tx.update(g, state)
    chex.assert_tree_all_finite(u)
    np.testing.assert_allclose(u[1], (1 - 1j) / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(u[0], 0.6 + 0.8j if scale_safe else 0.0, rtol=1e-5)


def _parts(tree):
  """Real and imaginary parts stacked, so that comparisons see both."""
  return jax.tree.map(lambda x: np.stack([np.real(x), np.imag(x)]), tree)


class ComplexTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_complex64_equals_optax_adam(self):
    self._assert_complex64_equals_optax_adam(scale_safe=True, nesterov=True)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(scale_safe=(False, True), nesterov=(False, True))
  @pytest.mark.slow
  def test_complex64_equals_optax_adam_in_every_case(self, scale_safe, nesterov):
    self._assert_complex64_equals_optax_adam(scale_safe, nesterov)

  def _assert_complex64_equals_optax_adam(self, scale_safe, nesterov):
    params = jax.tree.map(lambda x: x.astype(jnp.complex64), streams.nested_params())
    real = streams.gradient_stream(params, 50, seed=24)
    imag = streams.gradient_stream(params, 50, seed=25)
    grads = [
      jax.tree.map(lambda a, b: (a.real + 1j * b.real).astype(jnp.complex64), x, y)
      for x, y in zip(real, imag, strict=True)
    ]
    ours = bo.balanced_adam(1e-2, 0.9, scale_safe=scale_safe, nesterov=nesterov)
    got, state = streams.run(
      self.variant(ours.update), ours.init(params), grads, params
    )
    ref = optax.adam(1e-2, 0.9, 0.9, nesterov=nesterov)
    want, want_state = streams.reference(ref, grads, params)
    self.assertTrue(all(x.dtype == jnp.complex64 for x in jax.tree.leaves(got)))
    streams.assert_leafwise_close(_parts(got), _parts(want), rtol=1e-5)
    streams.assert_leafwise_close(
      _parts(state[0].mu), _parts(want_state[0].mu), rtol=1e-6
    )
    second = jax.tree.map(jnp.square, state[0].rms) if scale_safe else state[0].nu
    streams.assert_leafwise_close(_parts(second), _parts(want_state[0].nu), rtol=1e-5)
    self.assertGreater(np.abs(got["w"]).max(), 1e-3)  # Non-trivial updates.

  def test_complex128_under_x64_equals_optax_adam(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(26)
      params = jnp.zeros(8, jnp.complex128)
      grads = [
        jnp.asarray(rng.normal(size=8) + 1j * rng.normal(size=8)) for _ in range(30)
      ]
      for scale_safe in (False, True):
        ours = bo.balanced_adam(1e-2, 0.9, scale_safe=scale_safe)
        got, state = streams.run(ours.update, ours.init(params), grads, params)
        want, _ = streams.reference(optax.adam(1e-2, 0.9, 0.9), grads, params)
        self.assertEqual(got.dtype, np.complex128)
        self.assertEqual(state[0].mu.dtype, jnp.complex128)
        np.testing.assert_allclose(got, want, rtol=1e-12)

  def test_complex_least_squares_converges_like_optax_adam(self):
    rng = np.random.default_rng(27)
    a = jnp.asarray(rng.normal(size=(20, 5)) + 1j * rng.normal(size=(20, 5)))
    x_true = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5))
    b = (a @ x_true).astype(jnp.complex64)
    a = a.astype(jnp.complex64)

    def loss(x):
      return jnp.sum(jnp.abs(a @ x - b) ** 2)

    def train(tx):
      x, state = jnp.zeros(5, jnp.complex64), tx.init(jnp.zeros(5, jnp.complex64))
      step = jax.jit(lambda x, s: tx.update(jax.grad(loss)(x).conj(), s, x))
      for _ in range(2000):
        u, state = step(x, state)
        x = optax.apply_updates(x, u)
      return float(loss(x))

    want = train(optax.adam(1e-2, 0.9, 0.9))
    self.assertLess(want, 1e-2)
    for scale_safe in (False, True):
      got = train(bo.balanced_adam(1e-2, 0.9, scale_safe=scale_safe))
      self.assertLess(got, 1e-2)

  def test_nonfinite_imaginary_part_holds_the_coordinate(self):
    tx = bo.scale_by_balanced_adam(0.9, eps=0.0)
    g = jnp.array([1.0 + 1.0j, 2.0j], jnp.complex64)
    u, state = tx.update(g, tx.init(g))
    u, state = tx.update(jnp.array([complex(1.0, np.nan), 2.0j], jnp.complex64), state)
    np.testing.assert_allclose(u, g / jnp.abs(g), rtol=1e-6)
    np.testing.assert_allclose(state.mu / (1 - 0.9**2), g, rtol=1e-6)

  def test_state_dtype_for_complex_params_names_the_precision(self):
    params = jnp.zeros(3, jnp.complex64)
    state = bo.scale_by_balanced_adam(state_dtype="float32").init(params)
    self.assertEqual(state.mu.dtype, jnp.complex64)
    self.assertEqual(state.nu.dtype, jnp.complex64)
    with self.assertRaisesRegex(ValueError, "state_dtype"):
      bo.scale_by_balanced_adam(state_dtype="bfloat16").init(params)


def _stream(dtype, steps=40, seed=28):
  params = streams.nested_params(jnp.float32)
  grads = streams.gradient_stream(params, steps, seed=seed)
  return [jax.tree.map(lambda g: g.astype(dtype), g) for g in grads]


class MixedPrecisionTest(chex.TestCase):
  # (params, grads): optax.adam's update dtype is promote(params, grads).
  @parameterized.parameters(
    ("float32", "bfloat16"),
    ("float32", "float16"),
    ("bfloat16", "float32"),
    ("bfloat16", "bfloat16"),
    ("float16", "float16"),
    ("float32", "float32"),
  )
  def test_update_dtype_is_optax_adams(self, param_dtype, grad_dtype):
    params = streams.nested_params(param_dtype)
    grads = _stream(grad_dtype, steps=3)
    ours, ref = bo.balanced_adam(1e-3, 0.9), optax.adam(1e-3, 0.9, 0.9)
    got, _ = streams.run(jax.jit(ours.update), ours.init(params), grads, params)
    want, _ = streams.reference(ref, grads, params)
    chex.assert_trees_all_equal_dtypes(got, want)
    self.assertEqual(
      jax.tree.leaves(got)[0].dtype, jnp.promote_types(param_dtype, grad_dtype)
    )

  @parameterized.parameters(
    ("float32", "bfloat16"),
    ("bfloat16", "bfloat16"),
    ("float16", "float16"),
    ("float32", "float32"),
  )
  def test_without_params_the_update_dtype_is_still_optax_adams(
    self, param_dtype, grad_dtype
  ):
    params = streams.nested_params(param_dtype)
    grads = _stream(grad_dtype, steps=2)
    tx, ref = bo.scale_by_balanced_adam(0.9), optax.scale_by_adam(0.9, 0.9)
    got, _ = tx.update(grads[0], tx.init(params))
    want, _ = ref.update(grads[0], ref.init(params))
    chex.assert_trees_all_equal_dtypes(got, want)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_float32_params_with_bfloat16_grads_equal_optax_float32_updates(
    self, scale_safe
  ):
    params = streams.nested_params()
    grads = _stream(jnp.bfloat16, steps=60)
    ours = bo.balanced_adam(1e-3, 0.95, scale_safe=scale_safe)
    got, state = streams.run(
      self.variant(ours.update), ours.init(params), grads, params
    )
    want, _ = streams.reference(optax.adam(1e-3, 0.95, 0.95), grads, params)
    chex.assert_trees_all_equal_dtypes(got, want)
    # optax.adam forms (1-b) g and g**2 in bfloat16 before promoting them to
    # the float32 state; the fused path promotes g first, so it equals
    # optax.adam on float32 copies of the same bfloat16 gradients.
    streams.assert_leafwise_close(got, want, rtol=1e-2)
    f32 = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads]
    exact, exact_state = streams.reference(optax.adam(1e-3, 0.95, 0.95), f32, params)
    streams.assert_leafwise_close(got, exact, rtol=1e-5)
    streams.assert_leafwise_close(state[0].mu, exact_state[0].mu, rtol=1e-6)

  @parameterized.parameters("bfloat16", "float16")
  def test_low_precision_params_and_grads_match_float32_arithmetic(self, dtype):
    # optax.adam computes in the low dtype itself; the fused path computes in
    # float32 and rounds once, so compare with optax on the same values in f32.
    params = streams.nested_params(dtype)
    grads = _stream(dtype, steps=50)
    ours = bo.balanced_adam(1e-3, 0.95)
    got, state = streams.run(jax.jit(ours.update), ours.init(params), grads, params)
    self.assertTrue(all(x.dtype == dtype for x in jax.tree.leaves(got)))
    moment_dtype = jnp.float32 if dtype == "float16" else jnp.dtype(dtype)
    self.assertTrue(all(x.dtype == moment_dtype for x in jax.tree.leaves(state[0])[1:]))
    f32 = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads]
    want, _ = streams.reference(
      optax.adam(1e-3, 0.95, 0.95), f32, streams.nested_params()
    )
    tol = 1e-3 if dtype == "float16" else 2e-2  # bfloat16 state rounds each step.
    self.assertLess(_relative_error(got["w"], want["w"]), tol)

  def test_float16_gradients_with_float32_state_do_not_overflow(self):
    # g ~ 1000: g^2 = 1e6 is past float16's 65504; the float32 moments hold it.
    params = {"w": jnp.zeros(16, jnp.float16)}
    rng = np.random.default_rng(29)
    grads = [
      {"w": jnp.asarray(1000 + 400 * rng.normal(size=16), jnp.float16)}
      for _ in range(30)
    ]
    ours = bo.balanced_adam(1e-3, 0.9)
    got, _ = streams.run(jax.jit(ours.update), ours.init(params), grads, params)
    f32 = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads]
    want, _ = streams.reference(optax.adam(1e-3, 0.9, 0.9), f32, {"w": jnp.zeros(16)})
    self.assertLess(_relative_error(got["w"], want["w"]), 1e-3)

  def test_float64_under_x64_equals_optax_adam(self):
    with jax.enable_x64(True):
      params = streams.nested_params(jnp.float64)
      grads = _stream(jnp.float64, steps=40)
      for scale_safe in (False, True):
        ours = bo.balanced_adam(1e-3, 0.9, scale_safe=scale_safe)
        got, state = streams.run(ours.update, ours.init(params), grads, params)
        want, _ = streams.reference(optax.adam(1e-3, 0.9, 0.9), grads, params)
        chex.assert_trees_all_equal_dtypes(got, want)
        self.assertEqual(jax.tree.leaves(state[0])[1].dtype, jnp.float64)
        streams.assert_leafwise_close(got, want, rtol=1e-12)

  @parameterized.parameters(False, True)
  def test_bfloat16_state_with_float32_params(self, scale_safe):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 100, seed=11)
    low = bo.balanced_adam(1e-3, 0.95, state_dtype="bfloat16", scale_safe=scale_safe)
    state = low.init(params)
    moments = jax.tree.leaves(state[0])[1:]
    self.assertTrue(all(x.dtype == jnp.bfloat16 for x in moments))
    got, state = streams.run(jax.jit(low.update), state, grads, params)
    self.assertTrue(all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state[0])[1:]))
    self.assertTrue(all(x.dtype == np.float32 for x in jax.tree.leaves(got)))
    # Without params the update is float32 too (promote(float32 g, bfloat16 m)).
    u, _ = low.update(grads[0], low.init(params))
    self.assertTrue(all(x.dtype == np.float32 for x in jax.tree.leaves(u)))
    want, _ = streams.reference(optax.adam(1e-3, 0.95, 0.95), grads, params)
    # bfloat16 keeps 8 bits: the update is close, not equal.
    self.assertLess(_relative_error(got["w"], want["w"]), 2e-2)


class NesterovEpsRootTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_equals_optax_scale_by_adam(self):
    self._assert_equals_optax_scale_by_adam(
      nesterov=True, eps_root=1e-2, scale_safe=True
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    nesterov=(False, True), eps_root=(0.0, 1e-8, 1e-2), scale_safe=(False, True)
  )
  @pytest.mark.slow
  def test_equals_optax_scale_by_adam_in_every_case(
    self, nesterov, eps_root, scale_safe
  ):
    self._assert_equals_optax_scale_by_adam(nesterov, eps_root, scale_safe)

  def _assert_equals_optax_scale_by_adam(self, nesterov, eps_root, scale_safe):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 50, seed=30)
    ours = bo.scale_by_balanced_adam(
      0.9, 1e-8, eps_root=eps_root, nesterov=nesterov, scale_safe=scale_safe
    )
    got, _ = streams.run(self.variant(ours.update), ours.init(params), grads, params)
    ref = optax.scale_by_adam(0.9, 0.9, 1e-8, eps_root=eps_root, nesterov=nesterov)
    want, _ = streams.reference(ref, grads, params)
    streams.assert_leafwise_close(got, want, rtol=1e-5)

  @parameterized.parameters(False, True)
  def test_nesterov_and_zero_eps_zero_gradients_give_zero_updates(self, scale_safe):
    tx = bo.scale_by_balanced_adam(0.9, 0.0, nesterov=True, scale_safe=scale_safe)
    g = jnp.zeros(3)
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(u, 0.0)

  def test_nesterov_guard_looks_ahead_with_the_held_mean(self):
    # A constant gradient's Nesterov step is 1; a held coordinate keeps it.
    tx = bo.scale_by_balanced_adam(0.9, 0.0, nesterov=True)
    state = tx.init(jnp.zeros(2))
    for _ in range(4):
      u, state = tx.update(jnp.full(2, 0.3), state)
    u, state = tx.update(jnp.array([jnp.nan, 0.3]), state)
    # Nesterov's mixed bias corrections make a constant g's step
    # b c_k / c_{k+1} + (1-b) / c_k, not 1; the held coordinate takes it too.
    c = 1 - 0.9 ** np.arange(5, 7)
    np.testing.assert_allclose(u, 0.9 * c[0] / c[1] + 0.1 / c[0], rtol=1e-6)

  def test_negative_eps_root_is_a_construction_error(self):
    with self.assertRaisesRegex(ValueError, "eps_root"):
      bo.scale_by_balanced_adam(eps_root=-1.0)


class BuffersTest(chex.TestCase):
  @parameterized.parameters(False, True)
  def test_init_gives_each_moment_its_own_buffer_so_it_can_be_donated(self, scale_safe):
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(4)}
    tx = bo.balanced_adam(1e-2, scale_safe=scale_safe)
    for init in (tx.init, jax.jit(tx.init)):
      state = init(params)
      pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
      self.assertEqual(len(pointers), len(set(pointers)))

      @jax.jit
      def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

      step = jax.jit(step, donate_argnums=(0, 1))
      new_params, new_state = step(jax.tree.map(jnp.copy, params), state, params)
      chex.assert_tree_all_finite((new_params, new_state))

  @parameterized.named_parameters(
    ("fused", lambda: bo.balanced_adam(1e-2)),
    ("fused_scale_safe", lambda: bo.balanced_adam(1e-2, scale_safe=True)),
    ("fused_bfloat16", lambda: bo.balanced_adam(1e-2, state_dtype="bfloat16")),
    ("fused_nesterov", lambda: bo.balanced_adam(1e-2, nesterov=True)),
    ("tied_moments", lambda: optax.chain(bo.tied_moments(0.9), bo.snr_sign_step())),
    ("variance_ema", lambda: optax.chain(bo.variance_ema(0.9), bo.snr_sign_step())),
  )
  def test_the_donated_step_updates_the_state_in_place(self, make):
    # A kernel that read a moment's old value after its new value was written
    # would make XLA copy the donated buffer every step (the update reads the
    # moments as stored for this reason).
    tx = make()
    params = {"a": jnp.ones((64, 32)), "b": jnp.ones(32)}

    def step(params, state, grads):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    hlo = (
      jax.jit(step, donate_argnums=(0, 1))
      .lower(params, tx.init(params), params)
      .compile()
      .as_text()
    )
    copies = re.findall(r"^.*= \S+ copy(?:-start)?\(.*$", hlo, re.M)
    self.assertEqual(copies, [])


class InjectHyperparamsTest(chex.TestCase):
  def test_beta_changed_mid_training_matches_optax(self):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 60, seed=13)
    ours = optax.inject_hyperparams(bo.balanced_adam)(learning_rate=1e-3, beta=0.9)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.9, b2=0.9)
    got_state, want_state = ours.init(params), ref.init(params)
    for i, g in enumerate(grads):
      if i == 30:
        got_state.hyperparams["beta"] = jnp.asarray(0.99)
        want_state.hyperparams["b1"] = want_state.hyperparams["b2"] = jnp.asarray(0.99)
      u, got_state = jax.jit(ours.update)(g, got_state, params)
      v, want_state = jax.jit(ref.update)(g, want_state, params)
      streams.assert_leafwise_close(u, v, rtol=1e-5)
    self.assertAlmostEqual(float(got_state.hyperparams["beta"]), 0.99, places=6)

  def test_beta_schedule_matches_optax(self):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 40, seed=14)
    schedule = optax.linear_schedule(0.8, 0.99, 40)
    ours = optax.inject_hyperparams(bo.balanced_adam)(learning_rate=1e-3, beta=schedule)
    ref = optax.inject_hyperparams(optax.adam)(
      learning_rate=1e-3, b1=schedule, b2=schedule
    )
    got, _ = streams.run(jax.jit(ours.update), ours.init(params), grads, params)
    want, _ = streams.run(jax.jit(ref.update), ref.init(params), grads, params)
    streams.assert_leafwise_close(got, want, rtol=1e-5)

  @parameterized.named_parameters(
    ("tied_moments", lambda b: optax.chain(bo.tied_moments(b), bo.snr_sign_step())),
    ("variance_ema", lambda b: optax.chain(bo.variance_ema(b), bo.snr_sign_step())),
    ("scale_safe", lambda b: bo.scale_by_balanced_adam(b, scale_safe=True)),
  )
  def test_every_transform_accepts_injected_beta(self, make):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 20, seed=15)
    injected = optax.inject_hyperparams(make)(b=0.9)
    got, _ = streams.run(jax.jit(injected.update), injected.init(params), grads, params)
    want, _ = streams.run(
      jax.jit(make(0.9).update), make(0.9).init(params), grads, params
    )
    streams.assert_leafwise_close(got, want, rtol=1e-5)


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()


class AbstractInitTest(parameterized.TestCase):
  """init takes jax.ShapeDtypeStruct leaves, as optax.adam's does (sharding
  planners call it so); it gave a TypeError from jnp.asarray."""

  @parameterized.named_parameters(
    ("fused", lambda: bo.balanced_adam(1.0)),
    ("adamw", lambda: bo.balanced_adamw(1.0)),
    ("bfloat16_state", lambda: bo.balanced_adam(1.0, state_dtype="bfloat16")),
    ("scale_safe", lambda: bo.balanced_adam(1.0, scale_safe=True)),
    ("tied_moments", lambda: bo.tied_moments(0.9)),
    ("variance_ema", lambda: bo.variance_ema(0.9)),
    ("muon", lambda: bo.balanced_muon(1.0)),
  )
  def test_init_of_shape_dtype_structs_equals_init_of_zeros(self, make):
    tx = make()
    shapes = {
      "w": jax.ShapeDtypeStruct((2, 4, 8), jnp.float32),
      "m": jax.ShapeDtypeStruct((4, 8), jnp.bfloat16),
    }
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    chex.assert_trees_all_equal(tx.init(shapes), tx.init(zeros), strict=True)
