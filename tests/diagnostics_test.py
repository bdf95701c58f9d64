"""Tests of the gradient-scale invariance diagnostics against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from balanced_optax import alias, diagnostics

DELTA = 1e-4  # Slow drift: k * delta ~ 1e-2 keeps the first-order term dominant.
T = 1500  # >> the 1 / (1 - 0.99) horizon, so the EMAs have forgotten their start.


def _stationary_grads(dtype=jnp.float32, steps=T):
  """A fixed two-leaf gradient, repeated over steps (leading time axis)."""
  one = {
    "w": jnp.array([[1.0, -2.0], [0.5, 3.0]], dtype),
    "b": jnp.array([-0.7], dtype),
  }
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (steps, *x.shape)), one)


def _adam(b1, b2):
  return optax.adam(1.0, b1=b1, b2=b2, eps=0.0)


def _drift_ratio(b1, b2, delta, t):
  """Exact u_t(c g) / u_t(g) for a fixed g, c_j = exp(delta j), bias-corrected.

  An EMA of c_{t-j} x over the first t steps, divided by (1 - beta^t) and by
  c_t, is (1 - b) sum_{j<t} (b e^{-delta})^j / (1 - b^t); the second moment
  sees c^2, i.e. 2 delta. For a fixed g, u_t(g) = sign(g) exactly.
  """
  ema = lambda b, d: (1 - b) * (1 - (b * np.exp(-d)) ** t) / (1 - b * np.exp(-d))
  return (ema(b1, delta) / (1 - b1**t)) / np.sqrt(ema(b2, 2 * delta) / (1 - b2**t))


class TestFirstOrderScaleCoefficient:
  def test_closed_form_and_sign(self):
    # beta/(1-beta) is 9 for 0.9, 99 for 0.99, 999 for 0.999.
    assert diagnostics.first_order_scale_coefficient(0.9, 0.999) == pytest.approx(990)
    assert diagnostics.first_order_scale_coefficient(0.99, 0.9) == pytest.approx(-90)
    assert diagnostics.first_order_scale_coefficient(0.95, 0.95) == 0.0

  def test_vectorised(self):
    k = diagnostics.first_order_scale_coefficient(np.array([0.5, 0.9]), 0.99)
    np.testing.assert_allclose(k, [98.0, 90.0])

  @pytest.mark.parametrize(
    "args, name",
    [
      ((1.0, 0.9), "beta1"),
      ((0.9, -0.1), "beta2"),
      ((0.9, np.nan), "beta2"),
      (("0.9", 0.9), "beta1"),
      ((0.9, True), "beta2"),
    ],
  )
  def test_rejects_betas_outside_unit_interval(self, args, name):
    with pytest.raises(
      ValueError, match=rf"^{name} must be (a number )?in \[0.0, 1.0\)"
    ):
      diagnostics.first_order_scale_coefficient(*args)

  @pytest.mark.parametrize("delta", [DELTA, -DELTA])
  def test_sign_convention_by_simulation(self, delta):
    """u(c g)/u(g) -> 1 + k delta, with k's sign, measured from the norms."""
    grads = _stationary_grads()
    tx = _adam(0.9, 0.99)
    scales = np.exp(delta * np.arange(T))
    scaled, _ = diagnostics.update_norm_stability(tx, grads, scales)
    plain, _ = diagnostics.update_norm_stability(tx, grads, np.ones(T))
    k = diagnostics.first_order_scale_coefficient(0.9, 0.99)
    assert scaled[-1] / plain[-1] - 1 == pytest.approx(k * delta, rel=0.1)


class TestScaleSensitivity:
  @pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.5, 0.9), (0.99, 0.9)])
  @pytest.mark.parametrize("scale", [1e-3, 7.0, 1e3])
  def test_constant_scale_is_invisible_with_eps_zero(self, b1, b2, scale):
    """Zeroth order: Adam with eps = 0 is invariant to a constant c, any betas."""
    g_TxD = jax.random.normal(jax.random.key(0), (50, 6))
    d = diagnostics.scale_sensitivity(_adam(b1, b2), g_TxD, np.full(50, scale))
    assert d.shape == (50,)
    assert np.max(d) < 1e-5  # float32 rounding of c * g and of the EMAs.

  def test_eps_breaks_zeroth_order_invariance(self):
    """The test above can fail: eps = 1 on unit gradients is far from invariant."""
    g_TxD = jax.random.normal(jax.random.key(0), (50, 6))
    tx = optax.adam(1.0, 0.9, 0.999, eps=1.0)
    assert np.max(diagnostics.scale_sensitivity(tx, g_TxD, np.full(50, 10.0))) > 0.1

  def test_untied_drift_matches_first_order_coefficient(self):
    d = diagnostics.scale_sensitivity(
      _adam(0.9, 0.99), _stationary_grads(), np.exp(DELTA * np.arange(T))
    )
    k = diagnostics.first_order_scale_coefficient(0.9, 0.99)
    np.testing.assert_allclose(d[-200:], abs(k * DELTA), rtol=0.1)

  @pytest.mark.parametrize("beta", [0.9, 0.95])
  @pytest.mark.parametrize(
    "make",
    [lambda b: _adam(b, b), lambda b: alias.balanced_adam(1.0, b, eps=0.0)],
    ids=["adam_b1_eq_b2", "balanced_adam"],
  )
  def test_balanced_is_100x_less_sensitive(self, beta, make):
    scales = np.exp(DELTA * np.arange(T))
    untied = diagnostics.scale_sensitivity(
      _adam(beta, 0.99), _stationary_grads(), scales
    )
    tied = diagnostics.scale_sensitivity(make(beta), _stationary_grads(), scales)
    assert 100 * np.max(tied[-200:]) < np.min(untied[-200:])

  def test_noisy_stationary_gradient(self):
    """Around a noisy stationary gradient the first-order term cancels on
    average: untied still moves by ~|k delta|, tied >= 100x less."""
    mean = _stationary_grads()
    keys = iter(jax.random.split(jax.random.key(1), 2))
    noisy = jax.tree.map(
      lambda m: m + 0.3 * jax.random.normal(next(keys), m.shape), mean
    )
    scales = np.exp(DELTA * np.arange(T))
    untied = diagnostics.scale_sensitivity(_adam(0.9, 0.99), noisy, scales)[500:]
    tied = diagnostics.scale_sensitivity(_adam(0.9, 0.9), noisy, scales)[500:]
    k = diagnostics.first_order_scale_coefficient(0.9, 0.99)
    assert np.mean(untied) == pytest.approx(abs(k * DELTA), rel=0.1)
    assert 100 * np.mean(tied) < np.mean(untied)

  @pytest.mark.parametrize("b1, b2", [(0.9, 0.99), (0.9, 0.9), (0.95, 0.95)])
  def test_whole_trajectory_matches_exact_closed_form_float64(self, b1, b2):
    """Every step, transient included, equals the exact EMA sums.

    float64 because on the diagonal the deviation is second order,
    a (1 + a) / 2 * delta^2 = 4.5e-7 for beta = 0.9: the size of float32's
    rounding of the EMAs, so in float32 it cannot be told apart from noise.
    """
    with jax.enable_x64(True):
      grads = _stationary_grads(jnp.float64)
      d = diagnostics.scale_sensitivity(
        _adam(b1, b2), grads, np.exp(DELTA * np.arange(T))
      )
    t = np.arange(1, T + 1)
    np.testing.assert_allclose(
      d, np.abs(_drift_ratio(b1, b2, DELTA, t) - 1), rtol=1e-6, atol=1e-13
    )

  @pytest.mark.parametrize("beta", [0.9, 0.95])
  def test_balanced_second_order_term_float64(self, beta):
    """On the diagonal, d -> a (1 + a) / 2 * delta^2 with a = beta / (1 - beta)."""
    with jax.enable_x64(True):
      d = diagnostics.scale_sensitivity(
        _adam(beta, beta), _stationary_grads(jnp.float64), np.exp(DELTA * np.arange(T))
      )
    a = beta / (1 - beta)
    assert d[-1] == pytest.approx(a * (1 + a) / 2 * DELTA**2, rel=0.02)

  def test_list_and_stacked_inputs_agree(self):
    g_TxD = jax.random.normal(jax.random.key(2), (20, 3))
    scales = np.linspace(1.0, 3.0, 20)
    stacked = diagnostics.scale_sensitivity(_adam(0.9, 0.999), {"x": g_TxD}, scales)
    listed = diagnostics.scale_sensitivity(
      _adam(0.9, 0.999), [{"x": g} for g in g_TxD], scales
    )
    np.testing.assert_allclose(listed, stacked, rtol=1e-6)
    assert np.max(stacked) > 1e-3  # The pattern is not invisible to untied Adam.

  def test_params_reach_weight_decay(self):
    """adamw's decay term -lr wd p does not move with c but enlarges ||u(g)||.

    For g = 1 the Adam direction is 1, so with p = 1 and wd = 1 the update
    doubles while the difference u(c g) - u(g) is unchanged: d halves.
    """
    grads = jnp.ones((300, 2))
    tx = optax.adamw(1.0, 0.9, 0.99, eps=0.0, weight_decay=1.0)
    scales = np.exp(DELTA * np.arange(300))
    no_params = diagnostics.scale_sensitivity(tx, grads, scales)
    with_params = diagnostics.scale_sensitivity(tx, grads, scales, params=jnp.ones(2))
    assert no_params[-1] > 1e-3
    # Early steps: d ~ 1e-6, where float32 rounding of the two runs differs.
    np.testing.assert_allclose(with_params[100:], no_params[100:] / 2, rtol=1e-3)

  @pytest.mark.parametrize(
    "grads, scales, match",
    [
      (jnp.ones((5, 2)), np.ones(4), "leading time axis"),
      (jnp.ones((5, 2)), np.array([1.0, 1, 1, 1, 0]), "scales"),
      (jnp.ones((5, 2)), np.ones((5, 1)), "1-D"),
      ([], np.ones(3), "empty"),
      (jnp.ones((2, 2)), ["1", "2"], "^scales must be positive numbers"),
      (jnp.ones((2, 2)), [True, True], "^scales must be positive numbers"),
    ],
  )
  def test_bad_inputs(self, grads, scales, match):
    with pytest.raises(ValueError, match=match):
      diagnostics.scale_sensitivity(_adam(0.9, 0.9), grads, scales)


class TestUpdateNormStability:
  def test_sgd_reproduces_the_pattern(self):
    """SGD's update is -c_t g: norms c_t |g|, oscillation mean |d ln c|."""
    rng = np.random.default_rng(0)
    scales = np.exp(rng.normal(size=40))
    grads = _stationary_grads(steps=40)
    norms, osc = diagnostics.update_norm_stability(optax.sgd(1.0), grads, scales)
    g_norm = float(optax.tree.norm(jax.tree.map(lambda x: x[0], grads)))
    np.testing.assert_allclose(norms, scales * g_norm, rtol=1e-6)
    assert osc == pytest.approx(np.mean(np.abs(np.diff(np.log(scales)))), rel=1e-5)

  def test_a_constant_zero_norm_does_not_oscillate(self):
    """Zero gradients give zero updates: osc 0 (was NaN from log 0 - log 0);
    a step from a zero norm to a positive one counts inf."""
    zeros = jnp.zeros((5, 3))
    norms, osc = diagnostics.update_norm_stability(optax.sgd(1.0), zeros, np.ones(5))
    np.testing.assert_array_equal(norms, 0.0)
    assert osc == 0.0
    grads = jnp.concatenate([zeros, jnp.ones((1, 3))])
    _, osc = diagnostics.update_norm_stability(optax.sgd(1.0), grads, np.ones(6))
    assert osc == np.inf

  def test_warmup_drops_initial_steps(self):
    scales = np.array([1.0, 100.0, 1.0, 2.0, 4.0])
    _, osc = diagnostics.update_norm_stability(
      optax.sgd(1.0), jnp.ones((5, 1)), scales, warmup=2
    )
    assert osc == pytest.approx(np.log(2.0), rel=1e-6)
    for bad in (4, -1, True, 1.0):  # Bools are not step counts.
      with pytest.raises(
        ValueError, match=r"^warmup must be an integer in \[0, T - 2\] = \[0, 3\]"
      ):
        diagnostics.update_norm_stability(
          optax.sgd(1.0), jnp.ones((5, 1)), scales, warmup=bad
        )

  @pytest.mark.parametrize(
    "log_scales",
    [
      0.5 * np.sin(2 * np.pi * np.arange(1000) / 250),  # slow sinusoid
      np.log(2.0) * (np.arange(1000) // 200),  # doubling every 200 steps
    ],
    ids=["sinusoid", "steps"],
  )
  @pytest.mark.parametrize("untied_b2", [0.99, 0.999])
  def test_tied_pair_oscillates_less(self, log_scales, untied_b2):
    grads = _stationary_grads(steps=1000)
    scales = np.exp(log_scales)
    _, tied = diagnostics.update_norm_stability(
      _adam(0.9, 0.9), grads, scales, warmup=50
    )
    _, untied = diagnostics.update_norm_stability(
      _adam(0.9, untied_b2), grads, scales, warmup=50
    )
    assert 5 * tied < untied
