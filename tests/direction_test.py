"""snr_sign_step: Signum at power 0, Adam at 1/2, SNR^2 shrinkage at 1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams


class SignumTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    estimator=("tied_moments", "variance_ema"), debias=(True, False), beta=(0.5, 0.9)
  )
  def test_power_zero_after_either_estimator_is_optax_signum(
    self, estimator, debias, beta
  ):
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


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()
