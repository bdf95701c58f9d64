"""Stochastic rounding of bfloat16 state: unbiased, reproducible, and needed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import balanced_optax as bo
from balanced_optax import _rounding


def test_rounding_is_unbiased_and_lands_on_the_two_neighbours():
  # bfloat16 keeps 7 mantissa bits: the neighbours of 1 + 2^-9 are 1 and 1 + 2^-7.
  x = jnp.full((64, 1024), 1 + 2.0**-9, jnp.float32)  # 1/4 of the way up.
  old = jnp.zeros_like(x, jnp.bfloat16)
  stored = _rounding.store(x, old, count=jnp.int32(7), salt=0, stochastic=True)
  values = np.asarray(stored, np.float32)
  assert set(np.unique(values)) == {1.0, 1 + 2.0**-7}
  assert abs(values.mean() - (1 + 2.0**-9)) < 2e-5  # Unbiased (nearest gives 1).
  np.testing.assert_allclose((values > 1).mean(), 0.25, atol=0.01)


def test_bits_depend_on_count_salt_and_position_only():
  x = jnp.full((4096,), 1 + 2.0**-9, jnp.float32)
  old = jnp.zeros_like(x, jnp.bfloat16)
  store = lambda count, salt: np.asarray(
    _rounding.store(x, old, count=jnp.int32(count), salt=salt, stochastic=True)
  )
  np.testing.assert_array_equal(store(3, 0), store(3, 0))  # Reproducible.
  assert not np.array_equal(store(3, 0), store(4, 0))
  assert not np.array_equal(store(3, 0), store(3, 1))


def test_exact_values_special_values_and_other_dtypes_are_untouched():
  x = jnp.array([0.0, -0.0, 1.5, -2.0, jnp.inf, -jnp.inf, jnp.nan], jnp.float32)
  stored = _rounding.store(
    x, jnp.zeros(7, jnp.bfloat16), count=jnp.int32(1), salt=0, stochastic=True
  )
  np.testing.assert_array_equal(np.asarray(stored, np.float32), np.asarray(x))
  as_f16 = _rounding.store(
    x, jnp.zeros(7, jnp.float16), count=jnp.int32(1), salt=0, stochastic=True
  )
  assert as_f16.dtype == jnp.float16  # Round-to-nearest for non-bfloat16 state.


@pytest.mark.parametrize(
  "make", [bo.scale_by_balanced_adam, bo.tied_moments, bo.variance_ema]
)
def test_bfloat16_second_moment_tracks_float32_only_with_stochastic_rounding(make):
  # beta = 0.999: each step moves the EMA by ~1e-3 relative, under half a
  # bfloat16 ulp (2^-9), so round-to-nearest stalls and drifts.
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(0.3 + rng.normal(size=2048), jnp.float32) for _ in range(2000)]

  def second_moment(**kwargs):
    tx = make(0.999, **kwargs)
    state, update = tx.init(grads[0]), jax.jit(tx.update)
    for g in grads:
      _, state = update(g, state)
    second = state.variance if isinstance(state, bo.VarianceEmaState) else state.nu
    return float(jnp.mean(second.astype(jnp.float32)))

  exact = second_moment()
  stochastic = second_moment(state_dtype="bfloat16")
  nearest = second_moment(state_dtype="bfloat16", stochastic_rounding=False)
  assert abs(stochastic / exact - 1) < 0.01
  assert abs(nearest / exact - 1) > 0.05
