"""Stochastic rounding of bfloat16 state: unbiased, reproducible, and needed."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import balanced_optax as bo
from balanced_optax import _rounding


def _quarter_ulp_up(dtype=jnp.float32):
  """5248 distinct values, each 1/4 of a bfloat16 ulp above a bfloat16 number.

  bfloat16 keeps 7 mantissa bits: low = 2^e (1 + k/128) are bfloat16 numbers,
  high = 2^e (1 + (k+1)/128) the next ones, and x = 2^e (1 + k/128 + 1/512)
  lies a quarter of the way up. Returns (x, low, high).
  """
  e = np.arange(-20, 21)[:, None]
  fraction = 1 + np.arange(128)[None, :] / 128
  low, x, high = (np.ldexp(fraction + d, e).ravel() for d in (0, 2.0**-9, 2.0**-7))
  return jnp.asarray(x, dtype), low, high


def _store(x, count=7, salt=0):
  old = jnp.zeros(x.shape, jnp.bfloat16)
  stored = _rounding.store(x, old, count=jnp.int32(count), salt=salt, stochastic=True)
  assert stored.dtype == jnp.bfloat16
  return np.asarray(stored, np.float64)


def test_rounding_is_unbiased_and_lands_on_the_two_neighbours():
  x, low, high = _quarter_ulp_up()
  values = _store(x)
  assert np.all((values == low) | (values == high))
  # Within one step across distinct values (nearest would round all down).
  np.testing.assert_allclose((values == high).mean(), 0.25, atol=0.02)
  # Over steps, every element is unbiased: a quarter of the steps round up.
  up = np.mean([_store(x[:256], count=c) == high[:256] for c in range(400)], axis=0)
  np.testing.assert_allclose(up.mean(), 0.25, atol=0.01)
  assert 0.1 < up.min() and up.max() < 0.4


def test_bits_depend_on_count_salt_and_value_only():
  x, _, _ = _quarter_ulp_up()
  np.testing.assert_array_equal(_store(x), _store(x))  # Reproducible.
  assert not np.array_equal(_store(x, count=3), _store(x, count=4))
  assert not np.array_equal(_store(x, salt=0), _store(x, salt=1))
  # No dependence on position or layout: a permuted or reshaped array stores
  # the permuted or reshaped values (what makes jit and shard_map agree).
  permutation = np.random.default_rng(0).permutation(x.size)
  np.testing.assert_array_equal(_store(x[permutation]), _store(x)[permutation])
  np.testing.assert_array_equal(
    _store(x.reshape(41, 128)).ravel(), _store(x[::-1])[::-1]
  )


def test_float64_state_bound_for_bfloat16_is_rounded_stochastically_too():
  with jax.enable_x64(True):
    x, low, high = _quarter_ulp_up(jnp.float64)
    values = _store(x)
    assert x.dtype == jnp.float64
  assert np.all((values == low) | (values == high))
  np.testing.assert_allclose((values == high).mean(), 0.25, atol=0.02)


def test_float64_params_bfloat16_state_tracks_the_float64_ema():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    grads = jnp.asarray(0.3 + rng.normal(size=(1500, 512)), jnp.float64)

    def second_moment(**kwargs):
      tx = bo.scale_by_balanced_adam(0.999, **kwargs)

      def step(state, g):
        return tx.update(g, state)[1], None

      state, _ = jax.lax.scan(step, tx.init(grads[0]), grads)
      return float(jnp.mean(state.nu.astype(jnp.float64)))

    exact = second_moment()
    stochastic = second_moment(state_dtype="bfloat16")
    nearest = second_moment(state_dtype="bfloat16", stochastic_rounding=False)
  assert abs(stochastic / exact - 1) < 0.01
  assert abs(nearest / exact - 1) > 0.05


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
  "make",
  [
    bo.scale_by_balanced_adam,
    pytest.param(bo.tied_moments, marks=pytest.mark.slow),
    pytest.param(bo.variance_ema, marks=pytest.mark.slow),
  ],
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


_SHARDING_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import NamedSharding, PartitionSpec as P
  import balanced_optax as bo
  from balanced_optax import _rounding

  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((8,), ("x",))
  sharded = NamedSharding(mesh, P("x"))
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(0.3 + rng.normal(size=1024), jnp.float32) for _ in range(6)]
  tx = bo.scale_by_balanced_adam(0.99, state_dtype="bfloat16")

  def run(update, put=lambda x: x):
    state = tx.init(jnp.zeros(1024))
    state = state._replace(mu=put(state.mu), nu=put(state.nu))
    for g in grads:
      _, state = update(put(g), state)
    return state

  single = run(jax.jit(tx.update))
  jitted = run(jax.jit(tx.update), lambda x: jax.device_put(x, sharded))
  specs = optax.ScaleByAdamState(count=P(), mu=P("x"), nu=P("x"))
  in_shard_map = run(jax.jit(jax.shard_map(
      lambda g, s: tx.update(g, s), mesh=mesh,
      in_specs=(P("x"), specs), out_specs=(P("x"), specs))),
      lambda x: jax.device_put(x, sharded))
  assert jitted.mu.sharding.is_equivalent_to(sharded, 1)
  for state in (jitted, in_shard_map):
    for field in ("mu", "nu"):
      a, b = getattr(state, field), getattr(single, field)
      assert a.dtype == jnp.bfloat16
      a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
      np.testing.assert_array_equal(a, b)

  # Shard i holds 2^i (1 + k/128 + 1/512): the same mantissas and cut fractions
  # everywhere. Bits from the local index would round every shard alike.
  k = np.arange(128)
  x = np.concatenate([np.ldexp(1 + k / 128 + 2.0**-9, i) for i in range(8)])
  x = jax.device_put(jnp.asarray(x, jnp.float32), sharded)
  store = jax.shard_map(
      lambda x: _rounding.store(x, jnp.zeros(x.shape, jnp.bfloat16),
                                count=jnp.int32(5), salt=0, stochastic=True),
      mesh=mesh, in_specs=P("x"), out_specs=P("x"))
  up = (np.asarray(jax.jit(store)(x), np.float64) > np.asarray(x)).reshape(8, 128)
  assert len({row.tobytes() for row in up}) == 8, up.sum(1)
  np.testing.assert_allclose(up.mean(), 0.25, atol=0.05)
  print("ROUNDING SHARDING OK")
  """
)


@pytest.mark.slow
def test_jit_shard_map_and_one_device_store_the_same_bfloat16_state(run_on_8_devices):
  run_on_8_devices(_SHARDING_SCRIPT, "ROUNDING SHARDING OK")


def test_one_step_is_unbiased_across_elements_whatever_their_cut():
  # Within one step, the bits must not correlate with the cut fraction (the
  # low 16 bits that the rounding drops): the stored mean is the true mean.
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(1.0, 2.0, 200_000), jnp.float32)
  ulp = 2.0**-7  # bfloat16's spacing on [1, 2)
  for count in (1, 2, 1000):
    stored = np.asarray(_store(x, count=count), np.float64)
    error = stored - np.asarray(x, np.float64)
    assert np.all(np.abs(error) < ulp)
    # Each error is uniform-ish on (-ulp, ulp): the mean's standard error is
    # below ulp / sqrt(3 n); allow five of them.
    assert abs(error.mean()) < 5 * ulp / np.sqrt(3 * x.size), (count, error.mean())
