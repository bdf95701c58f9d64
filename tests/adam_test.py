"""scale_by_balanced_adam: state compatibility, scale safety, dtypes, guards."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
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


class DtypeTest(chex.TestCase):
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
    want, _ = streams.reference(optax.adam(1e-3, 0.95, 0.95), grads, params)
    # bfloat16 keeps 8 bits: the update is close, not equal.
    self.assertLess(_relative_error(got["w"], want["w"]), 2e-2)

  @parameterized.parameters("bfloat16", "float16")
  def test_low_precision_params_get_updates_in_their_dtype(self, dtype):
    dtype = jnp.dtype(dtype)
    params = streams.nested_params(dtype)
    grads = streams.gradient_stream(params, 50, seed=12)
    tx = bo.balanced_adam(1e-3, 0.95, state_dtype=jnp.float32)
    got, state = streams.run(jax.jit(tx.update), tx.init(params), grads, params)
    self.assertTrue(all(x.dtype == dtype for x in jax.tree.leaves(got)))
    self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0])[1:]))
    f32_grads = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads]
    want, _ = streams.reference(
      optax.adam(1e-3, 0.95, 0.95), f32_grads, streams.nested_params()
    )
    self.assertLess(_relative_error(got["w"], want["w"]), 1e-2)


class GuardTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_nonfinite_coordinates_keep_their_moments_and_get_no_update(self, scale_safe):
    tx = bo.scale_by_balanced_adam(0.9, scale_safe=scale_safe)
    update = self.variant(tx.update)
    g = jnp.array([1.0, -2.0, 3.0, 0.5])
    _, state = update(g, tx.init(g))
    bad = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 0.25])
    u, new = update(bad, state)
    np.testing.assert_array_equal(u[:3], 0.0)
    self.assertNotEqual(float(u[3]), 0.0)
    for old_leaf, new_leaf in zip(
      jax.tree.leaves(state)[1:], jax.tree.leaves(new)[1:], strict=True
    ):
      np.testing.assert_array_equal(new_leaf[:3], old_leaf[:3])
      self.assertNotEqual(float(new_leaf[3]), float(old_leaf[3]))

  def test_unguarded_matches_optax_adam_nan_propagation(self):
    g = jnp.array([1.0, jnp.nan])
    tx = bo.scale_by_balanced_adam(0.9, guard_nonfinite=False)
    u, state = tx.update(g, tx.init(g))
    ref = optax.scale_by_adam(0.9, 0.9)
    ref_u, ref_state = ref.update(g, ref.init(g))
    np.testing.assert_array_equal(np.isnan(u), np.isnan(ref_u))
    np.testing.assert_array_equal(np.isnan(state.nu), np.isnan(ref_state.nu))

  @parameterized.parameters(False, True)
  def test_zero_eps_with_zero_gradients_gives_zero_updates(self, scale_safe):
    tx = bo.balanced_adam(1e-3, 0.9, eps=0.0, scale_safe=scale_safe)
    params = streams.nested_params()
    state = tx.init(params)
    for _ in range(3):
      u, state = jax.jit(tx.update)(params, state, params)  # params are zeros.
      chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    chex.assert_tree_all_finite(state)


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
