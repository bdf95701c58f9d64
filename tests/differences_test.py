"""Where a path deliberately parts from optax.adam(b1=b2): docs/guarantees.md
states each case, and the tests here pin what it says."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax as bo


def _chain(estimator, learning_rate, beta, eps=1e-8):
  return optax.chain(
    estimator(beta), bo.snr_sign_step(eps), optax.scale_by_learning_rate(learning_rate)
  )


def _run(tx, grads, params, change_beta_at=None):
  state, update = tx.init(params), None
  for k, g in enumerate(grads):
    if k == change_beta_at:
      state.hyperparams["beta"] = jnp.asarray(0.99)
    update, state = jax.jit(tx.update)(jnp.asarray(g), state, params)
  return update, state


def test_a_beta_changed_mid_training_leaves_the_chains_off_optax():
  """The fused path debiases as optax does and tracks it. After the change,
  optax's debiased second moment falls below the squared mean, so its step
  exceeds the learning rate (5x here); tied_moments clamps that negative
  variance at 0 and steps at most the learning rate."""
  params = jnp.zeros(2)
  grads = ([1.0, -0.5], [0.8, 0.7], [1.2, -0.3])
  inject = lambda make: optax.inject_hyperparams(make)(learning_rate=1.0, beta=0.5)
  want, _ = _run(
    inject(lambda learning_rate, beta: optax.adam(learning_rate, beta, beta)),
    grads,
    params,
    change_beta_at=2,
  )
  fused, _ = _run(inject(bo.balanced_adam), grads, params, change_beta_at=2)
  np.testing.assert_allclose(fused, want, rtol=1e-5)
  assert np.all(np.abs(want) > 2.0)  # optax: |update| > learning rate
  chains = {
    "tied_moments": lambda learning_rate, beta: _chain(
      bo.tied_moments, learning_rate, beta
    ),
    "variance_ema": lambda learning_rate, beta: _chain(
      bo.variance_ema, learning_rate, beta
    ),
  }
  for name, make in chains.items():
    chain, _ = _run(inject(make), grads, params, change_beta_at=2)
    assert np.all(np.abs(chain) <= 1.0 + 1e-6), name
    assert not np.allclose(chain, want, rtol=0.1), name


def test_variance_ema_recovers_after_g_squared_overflows():
  """g = 3e19 overflows g^2 in float32: optax.adam, the fused path and
  tied_moments hold v = inf and give 0 from then on; variance_ema keeps the
  variance itself, whose next increments are finite, and steps again."""
  params, grads = jnp.zeros(1), ([3e19], [1e19], [1e19], [1e19])
  want, _ = _run(optax.adam(1.0, 0.9, 0.9), grads, params)
  assert want[0] == 0.0
  for tx in (bo.balanced_adam(1.0, 0.9), _chain(bo.tied_moments, 1.0, 0.9)):
    np.testing.assert_array_equal(_run(tx, grads, params)[0], want)
  recovered, _ = _run(_chain(bo.variance_ema, 1.0, 0.9), grads, params)
  np.testing.assert_allclose(recovered, [-0.867], rtol=2e-3)


def test_variance_ema_underflows_to_a_sign_step_below_1e_18():
  """With eps = 0 and |g| ~ 5e-19 in float32, g^2 ~ 2.5e-37 still holds
  (optax.adam, the fused path, tied_moments), but variance_ema's variance,
  ~1e-38, is below float32's smallest normal and flushed to zero on CPU: its
  step is the sign step. At scale 1 all paths agree."""
  params = jnp.zeros(1)
  for scale, sign_step in ((5e-19, True), (1.0, False)):
    grads = [[b * scale] for b in (1.0, 0.7, 1.3, 0.8)]
    want, _ = _run(optax.adam(1.0, 0.9, 0.9, eps=0.0), grads, params)
    np.testing.assert_allclose(want, [-0.97142], rtol=1e-4)
    for tx in (bo.balanced_adam(1.0, 0.9, 0.0), _chain(bo.tied_moments, 1.0, 0.9, 0.0)):
      np.testing.assert_allclose(_run(tx, grads, params)[0], want, rtol=1e-5)
    got, _ = _run(_chain(bo.variance_ema, 1.0, 0.9, 0.0), grads, params)
    np.testing.assert_allclose(got, [-1.0] if sign_step else want, rtol=1e-5)


def test_without_params_float32_state_and_float16_gradients_give_float16():
  """The stored moment stands in for the params: float32 moments are what
  float16 params get, so float16 gradients read as float16 params (optax.adam,
  whose state dtype is the params', gives float32). With params, optax's."""
  params, grads = jnp.ones(3), jnp.array([0.3, -1.7, 2.1], jnp.float16)
  tx, ref = bo.balanced_adam(1e-3, 0.9), optax.adam(1e-3, 0.9, 0.9)
  state, ref_state = tx.init(params), ref.init(params)
  assert tx.update(grads, state)[0].dtype == jnp.float16
  assert ref.update(grads, ref_state)[0].dtype == jnp.float32
  assert tx.update(grads, state, params)[0].dtype == jnp.float32


def test_bfloat16_params_with_float32_gradients_keep_bfloat16_moments():
  """optax.adam's mu drifts to float32 at the first update (its nu stays
  bfloat16): a state whose dtype changes between steps. The library keeps
  both moments in the params' dtype, so the steps agree to bfloat16 rounding."""
  params = jnp.ones(3, jnp.bfloat16)
  grads = [jnp.array([0.3, -1.7, 2.1]), jnp.array([0.5, -1.0, 1.9])]
  tx, ref = bo.balanced_adam(1e-2, 0.9), optax.adam(1e-2, 0.9, 0.9)
  state, ref_state = tx.init(params), ref.init(params)
  for g in grads:
    got, state = tx.update(g, state, params)
    want, ref_state = ref.update(g, ref_state, params)
    np.testing.assert_allclose(got, want, rtol=2e-2)
  assert (ref_state[0].mu.dtype, ref_state[0].nu.dtype) == (jnp.float32, jnp.bfloat16)
  assert state[0].mu.dtype == state[0].nu.dtype == jnp.bfloat16
  assert got.dtype == want.dtype == jnp.float32


@pytest.mark.parametrize("beta", [1.5, -0.1])
def test_injected_hyperparameters_are_checked_when_init_runs_eagerly(beta):
  """inject_hyperparams builds the inner optimizer at init: eagerly, a bad
  value fails there; under jax.jit(init) it is traced and cannot be checked."""
  tx = optax.inject_hyperparams(bo.balanced_adam)(learning_rate=1e-3, beta=beta)
  with pytest.raises(ValueError, match="beta must be in"):
    tx.init(jnp.zeros(2))
