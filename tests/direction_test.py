"""snr_sign_step: Signum at power 0, Adam at 1/2, SNR^2 shrinkage at 1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams


class SignumTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_power_zero_after_either_estimator_is_optax_signum(self):
    self._assert_power_zero_is_optax_signum("variance_ema", debias=True, beta=0.9)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    estimator=("tied_moments", "variance_ema"), debias=(True, False), beta=(0.5, 0.9)
  )
  @pytest.mark.slow
  def test_power_zero_after_either_estimator_is_optax_signum_in_every_case(
    self, estimator, debias, beta
  ):
    self._assert_power_zero_is_optax_signum(estimator, debias, beta)

  def _assert_power_zero_is_optax_signum(self, estimator, debias, beta):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 100, seed=7)
    tx = optax.chain(
      getattr(bo, estimator)(beta, debias=debias),
      bo.snr_sign_step(power=0.0),
      optax.scale_by_learning_rate(1e-2),
    )
    got, _ = streams.run(self.variant(tx.update), tx.init(params), grads, params)
    want, _ = streams.reference(optax.signum(1e-2, beta), grads, params)
    chex.assert_trees_all_equal(got, want)  # Signs are exact.


class ClosedFormTest(chex.TestCase):
  def setUp(self):
    super().setUp()
    self.mean = jnp.array([2.0, -1.0, 0.5, 0.0, -3.0])
    self.variance = jnp.array([0.0, 3.0, 0.75, 1.0, 7.0])
    # rho = |mean| / sqrt(mean^2 + variance) with eps = 0.
    self.rho = np.array([1.0, 0.5, 0.5, 0.0, 3.0 / 4.0])
    self.sign = np.sign(np.asarray(self.mean))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.25, 0.5, 0.75, 1.0)
  def test_direction_is_sign_times_rho_to_the_2p(self, power):
    step = bo.snr_sign_step(eps=0.0, power=power)
    direction, _ = self.variant(step.update)(
      bo.GradientMoments(self.mean, self.variance), step.init(None)
    )
    np.testing.assert_allclose(
      direction, self.sign * self.rho ** (2 * power), rtol=1e-6
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.3, 0.5, 1.0)
  def test_traced_power_agrees_with_static_power(self, power):
    moments = bo.GradientMoments(self.mean, self.variance)

    def direction(p):
      step = bo.snr_sign_step(eps=1e-3, power=p)
      return step.update(moments, step.init(None))[0]

    static = direction(power)
    traced = self.variant(direction)(jnp.float32(power))
    np.testing.assert_allclose(traced, static, rtol=1e-6, atol=0)

  def test_adam_direction_is_mean_over_root_second_moment(self):
    step = bo.snr_sign_step(eps=1e-3)
    direction, _ = step.update(
      bo.GradientMoments(self.mean, self.variance), step.init(None)
    )
    want = self.mean / (jnp.sqrt(self.mean**2 + self.variance) + 1e-3)
    np.testing.assert_allclose(direction, want, rtol=1e-6)

  @parameterized.parameters(0.0, 0.5, 1.0)
  def test_zero_moments_with_zero_eps_give_zero_not_nan(self, power):
    step = bo.snr_sign_step(eps=0.0, power=power)
    zeros = jnp.zeros(4)
    direction, _ = jax.jit(step.update)(
      bo.GradientMoments(zeros, zeros), step.init(None)
    )
    np.testing.assert_array_equal(direction, 0.0)

  def test_output_dtype_follows_the_moments(self):
    step = bo.snr_sign_step()
    half = bo.GradientMoments(
      self.mean.astype(jnp.bfloat16), self.variance.astype(jnp.bfloat16)
    )
    direction, _ = step.update(half, step.init(None))
    self.assertEqual(direction.dtype, jnp.bfloat16)

  def test_rejects_plain_gradients_with_a_clear_message(self):
    step = bo.snr_sign_step()
    with self.assertRaisesRegex(TypeError, "expects GradientMoments.*tied_moments"):
      step.update(jnp.ones(3), step.init(None))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.5, 1.0)
  def test_complex_direction_is_phase_times_rho_to_the_2p(self, power):
    mean = jnp.array([3 + 4j, -1j, 0j, 1 - 1j], jnp.complex64)
    variance = jnp.array([0.0, 3.0, 1.0, 2.0], jnp.float32)
    step = bo.snr_sign_step(eps=0.0, power=power)
    direction, _ = self.variant(step.update)(
      bo.GradientMoments(mean, variance), step.init(None)
    )
    m = np.asarray(mean, np.complex128)
    rho = np.abs(m) / np.sqrt(np.abs(m) ** 2 + np.asarray(variance))
    phase = np.where(m == 0, 0, m / np.where(m == 0, 1, np.abs(m)))
    self.assertEqual(direction.dtype, jnp.complex64)
    np.testing.assert_allclose(direction, phase * rho ** (2 * power), atol=1e-6)

  def test_hand_built_moments_work_also_as_jit_arguments(self):
    step = bo.snr_sign_step(eps=1e-3)
    moments = bo.GradientMoments({"a": self.mean}, {"a": self.variance})
    want, _ = step.update(moments, step.init(None))
    got, _ = jax.jit(step.update)(moments, step.init(None))
    np.testing.assert_allclose(got["a"], want["a"], rtol=1e-6)
    np.testing.assert_allclose(
      want["a"], self.mean / (jnp.sqrt(self.mean**2 + self.variance) + 1e-3), rtol=1e-6
    )


def _chain_update(tx, grads, params):
  state = tx.init(params)
  return jax.jit(tx.update)(grads, state, params)[0]


class CompositionTest(chex.TestCase):
  """Issue 12: a transform between an estimator and the direction must not
  silently treat the mean and the variance as one gradient."""

  @parameterized.product(
    estimator=("tied_moments", "variance_ema"),
    between=("clip_by_global_norm", "scale", "scale_by_schedule"),
  )
  def test_a_transform_between_estimator_and_direction_raises(self, estimator, between):
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    middle = {
      "clip_by_global_norm": optax.clip_by_global_norm(1.0),
      "scale": optax.scale(0.5),
      "scale_by_schedule": optax.scale_by_schedule(optax.constant_schedule(2.0)),
    }[between]
    tx = optax.chain(getattr(bo, estimator)(0.9), middle, bo.snr_sign_step())
    grads = jax.tree.map(lambda p: 3.0 * p, params)
    with self.assertRaisesRegex(TypeError, "clipping before the estimator"):
      _chain_update(tx, grads, params)
    with self.assertRaisesRegex(TypeError, "rebuilt"):
      tx.update(grads, tx.init(params), params)

  @parameterized.product(
    estimator=("tied_moments", "variance_ema"),
    between=("add_decayed_weights", "masked"),
  )
  def test_a_transform_pairing_moments_with_params_fails_on_the_tree(
    self, estimator, between
  ):
    # These map the moments together with a params-shaped tree (params, mask),
    # so the pytree mismatch stops them before the direction rule can.
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    middle = {
      "add_decayed_weights": optax.add_decayed_weights(1e-4),
      "masked": optax.masked(optax.scale(0.5), {"w": True, "b": False}),
    }[between]
    tx = optax.chain(getattr(bo, estimator)(0.9), middle, bo.snr_sign_step())
    with self.assertRaisesRegex(ValueError, "EstimatedMoments"):
      _chain_update(tx, params, params)

  @parameterized.parameters("tied_moments", "variance_ema")
  def test_clipping_before_the_estimator_is_optax_chain_clip_adam(self, estimator):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 30, scale=3.0, seed=8)
    tx = optax.chain(
      optax.clip_by_global_norm(1.0),
      getattr(bo, estimator)(0.9),
      bo.snr_sign_step(),
      optax.scale_by_learning_rate(1e-3),
    )
    want_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3, 0.9, 0.9))
    got, _ = streams.reference(tx, grads, params)
    want, _ = streams.reference(want_tx, grads, params)
    streams.assert_leafwise_close(got, want, rtol=2e-5)

  @parameterized.parameters("tied_moments", "variance_ema")
  def test_weight_decay_after_the_direction_is_optax_adamw(self, estimator):
    params = jax.tree.map(lambda p: p + 0.5, streams.nested_params())
    grads = streams.gradient_stream(params, 30, seed=9)
    tx = optax.chain(
      getattr(bo, estimator)(0.9),
      bo.snr_sign_step(),
      optax.add_decayed_weights(0.1),
      optax.scale_by_learning_rate(1e-3),
    )
    got, _ = streams.reference(tx, grads, params)
    want, _ = streams.reference(
      optax.adamw(1e-3, 0.9, 0.9, weight_decay=0.1), grads, params
    )
    streams.assert_leafwise_close(got, want, rtol=2e-5)

  @parameterized.parameters("tied_moments", "variance_ema")
  def test_masking_around_the_whole_chain_is_optax_masked_adam(self, estimator):
    params = streams.nested_params()
    mask = jax.tree.map(lambda p: p.ndim > 1, params)
    grads = streams.gradient_stream(params, 30, seed=10)
    chain = optax.chain(
      getattr(bo, estimator)(0.9),
      bo.snr_sign_step(),
      optax.scale_by_learning_rate(1e-3),
    )
    got, _ = streams.reference(optax.masked(chain, mask), grads, params)
    want, _ = streams.reference(
      optax.masked(optax.adam(1e-3, 0.9, 0.9), mask), grads, params
    )
    streams.assert_leafwise_close(got, want, rtol=2e-5)
    np.testing.assert_array_equal(
      got["layers"][0], np.stack([g["layers"][0] for g in grads])
    )

  def test_estimator_output_across_a_jit_boundary_needs_rewrapping(self):
    g = jnp.array([1.0, -2.0])
    estimator, step = bo.variance_ema(0.9), bo.snr_sign_step()
    moments, _ = jax.jit(estimator.update)(g, estimator.init(g))
    with self.assertRaisesRegex(TypeError, "GradientMoments\\(\\*moments\\)"):
      step.update(moments, step.init(None))
    direction, _ = step.update(bo.GradientMoments(*moments), step.init(None))
    np.testing.assert_allclose(direction, [1.0, -1.0], rtol=1e-6)


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()
