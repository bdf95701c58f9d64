"""Bad input fails at construction with a message naming the argument and range."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax as bo

BAD_BETAS = (-0.1, 1.0, 1.5, float("nan"), float("inf"))
BETA_TAKERS = {
  "tied_moments": lambda b: bo.tied_moments(b),
  "variance_ema": lambda b: bo.variance_ema(b),
  "scale_by_balanced_adam": lambda b: bo.scale_by_balanced_adam(b),
  "balanced_adam": lambda b: bo.balanced_adam(1e-3, b),
  "balanced_adamw": lambda b: bo.balanced_adamw(1e-3, b),
}


@pytest.mark.parametrize("beta", BAD_BETAS)
@pytest.mark.parametrize("name", sorted(BETA_TAKERS))
def test_beta_outside_unit_interval(name, beta):
  with pytest.raises(ValueError, match=r"beta must be in \[0.0, 1.0\)"):
    BETA_TAKERS[name](beta)


@pytest.mark.parametrize("beta", (1 - 1e-8, 0.99999998))
@pytest.mark.parametrize("name", sorted(BETA_TAKERS))
def test_beta_that_rounds_to_one_in_float32(name, beta):
  """In [0, 1) but 1.0 in float32, the transforms' arithmetic: the paths gave
  inf, NaN or a frozen step, all different; now a ValueError."""
  with pytest.raises(ValueError, match=r"beta must be at most 0\.99999994"):
    BETA_TAKERS[name](beta)


@pytest.mark.parametrize("beta", (0.0, 0.5, 0.999999, 0.99999994, jnp.float32(0.9)))
def test_valid_betas_at_the_edges_give_optax_adams_first_two_steps(beta):
  # At the range's edges (no memory; a memory of a million steps) each
  # transform still builds and runs, and the two optimizers' steps equal
  # optax.adam's with b1 = b2 = beta (the estimators feed the same direction).
  params = jnp.zeros(3)
  reference = optax.adam(1e-3, b1=float(beta), b2=float(beta))
  for name, make in BETA_TAKERS.items():
    tx = make(beta)
    if name in ("tied_moments", "variance_ema"):
      tx = optax.chain(tx, bo.snr_sign_step(), optax.scale_by_learning_rate(1e-3))
    elif name == "scale_by_balanced_adam":
      tx = optax.chain(tx, optax.scale_by_learning_rate(1e-3))
    state, ref_state = tx.init(params), reference.init(params)
    for g in ([1.0, -2.0, 0.5], [3.0, -1.0, 0.5]):
      u, state = tx.update(jnp.array(g), state, params)
      want, ref_state = reference.update(jnp.array(g), ref_state, params)
      # float32's 1 - beta**k is accurate to ~1e-7 absolute: the documented
      # limit for every implementation (optax's too) when beta is near 1.
      rtol = 1e-4 + 1e-7 / (1 - float(beta))
      np.testing.assert_allclose(u, want, rtol=rtol, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(
  "make",
  (
    lambda e: bo.snr_sign_step(eps=e),
    lambda e: bo.scale_by_balanced_adam(eps=e),
    lambda e: bo.balanced_adam(1e-3, eps=e),
    lambda e: bo.balanced_adamw(1e-3, eps=e),
  ),
)
def test_negative_or_infinite_eps(make):
  for bad in (-1e-8, float("inf"), float("nan")):
    with pytest.raises(ValueError, match=r"eps must be in \[0.0, inf\)"):
      make(bad)
  make(0.0)  # Zero is allowed (and safe).


@pytest.mark.parametrize("make", (bo.balanced_adam, bo.balanced_adamw))
def test_negative_or_infinite_constant_learning_rate(make):
  for bad in (-1e-3, float("inf"), float("nan")):
    with pytest.raises(ValueError, match=r"learning_rate must be in \[0.0, inf\)"):
      make(bad)
  make(optax.linear_schedule(1e-3, 0.0, 10))  # Schedules are optax's business.


@pytest.mark.parametrize("power", (-0.1, 1.01, float("nan")))
def test_power_outside_zero_one(power):
  with pytest.raises(ValueError, match=r"power must be in \[0.0, 1.0\]"):
    bo.snr_sign_step(power=power)


def test_negative_weight_decay():
  with pytest.raises(ValueError, match="weight_decay"):
    bo.balanced_adamw(1e-3, weight_decay=-0.1)


STATE_DTYPE_TAKERS = {
  "tied_moments": lambda d: bo.tied_moments(0.9, state_dtype=d),
  "variance_ema": lambda d: bo.variance_ema(0.9, state_dtype=d),
  "scale_by_balanced_adam": lambda d: bo.scale_by_balanced_adam(state_dtype=d),
  "balanced_adam": lambda d: bo.balanced_adam(1e-3, state_dtype=d),
  "balanced_adamw": lambda d: bo.balanced_adamw(1e-3, state_dtype=d),
}


@pytest.mark.parametrize("dtype", (jnp.int32, "bool", "not-a-dtype", "bf16", 3))
@pytest.mark.parametrize("name", sorted(STATE_DTYPE_TAKERS))
def test_state_dtype_must_be_floating(name, dtype):
  """README: a ValueError naming state_dtype and what it accepts (not TypeError)."""
  with pytest.raises(ValueError, match=r"^state_dtype must be a floating dtype"):
    STATE_DTYPE_TAKERS[name](dtype)


@pytest.mark.parametrize("dtype", (None, "bfloat16", jnp.float32, "float16"))
def test_floating_state_dtypes_are_accepted(dtype):
  for make in STATE_DTYPE_TAKERS.values():
    make(dtype)


def test_non_scalar_hyperparameters():
  with pytest.raises(ValueError, match="beta must be a scalar"):
    bo.balanced_adam(1e-3, beta=jnp.array([0.9, 0.9]))
  with pytest.raises(ValueError, match="learning_rate must be a scalar"):
    bo.balanced_adam(jnp.ones(2))


@pytest.mark.parametrize(
  "make, match",
  (
    (
      lambda: bo.balanced_adam("1e-3"),
      r"learning_rate must be a number in \[0.0, inf\)",
    ),
    (
      lambda: bo.balanced_adamw("1e-3"),
      r"learning_rate must be a number in \[0.0, inf\)",
    ),
    (lambda: bo.balanced_adam(True), r"learning_rate must be a number in \[0.0, inf\)"),
    (
      lambda: bo.balanced_adam(1e-3, beta="0.9"),
      r"beta must be a number in \[0.0, 1.0\)",
    ),
    (lambda: bo.tied_moments("0.9"), r"beta must be a number in \[0.0, 1.0\)"),
    (lambda: bo.variance_ema(True), r"beta must be a number in \[0.0, 1.0\)"),
    (
      # 0.9 + 0j is accepted: inject_hyperparams casts to complex params' dtype.
      lambda: bo.scale_by_balanced_adam(0.9 + 0.1j),
      r"beta must be a number in \[0.0, 1.0\)",
    ),
    (
      lambda: bo.balanced_adam(1e-3, eps="small"),
      r"eps must be a number in \[0.0, inf\)",
    ),
    (lambda: bo.snr_sign_step(eps=None), r"eps must be a number in \[0.0, inf\)"),
    (lambda: bo.snr_sign_step(power="1"), r"power must be a number in \[0.0, 1.0\]"),
    (
      lambda: bo.balanced_adamw(1e-3, weight_decay="0.1"),
      r"weight_decay must be a number in \[0.0, inf\)",
    ),
  ),
)
def test_non_numbers_are_a_value_error_naming_argument_and_range(make, match):
  """README: bad hyperparameters raise ValueError; strings and bools are not parsed."""
  with pytest.raises(ValueError, match="^" + match):
    make()


@pytest.mark.parametrize(
  "tx",
  (
    bo.balanced_adam(1e-3),
    optax.chain(bo.tied_moments(0.9), bo.snr_sign_step()),
    optax.chain(bo.variance_ema(0.9), bo.snr_sign_step()),
  ),
)
def test_mismatched_gradient_tree_is_a_clear_error(tx):
  state = tx.init({"w": jnp.zeros(3), "b": jnp.zeros(2)})
  with pytest.raises(ValueError, match="does not match the tree the optimizer"):
    tx.update({"w": jnp.zeros(3)}, state)


@pytest.mark.parametrize(
  "grid, beta_range, nearest",
  (
    (bo.BETA_GRID, (0.95, 0.95), "values are 0.94377 below and 0.96838 above"),
    ((0.5, 0.9), (0.95, 0.99), "value is 0.9 below"),
    ((0.5, 0.9), (0.1, 0.2), "value is 0.5 above"),
  ),
)
def test_a_range_without_grid_values_names_the_nearest_ones(grid, beta_range, nearest):
  """The message named the whole grid (13 values of 17 digits for BETA_GRID)."""
  low, high = beta_range
  want = (
    f"grid has no value inside beta_range=({low}, {high}) (to within 1e-05);"
    f" its nearest {nearest}."
  )
  for rule in (
    lambda: bo.beta_from_noise_and_lag(1.0, 1.0, beta_range=beta_range, grid=grid),
    lambda: bo.beta_from_refresh(2e4, grid=grid, beta_range=beta_range),
    lambda: bo.select_beta(
      lambda beta: bo.balanced_adam(1e-3, beta),
      lambda p, b: p,
      lambda k: None,
      jnp.zeros(3),
      beta_range=beta_range,
      grid=grid,
    ),
  ):
    with pytest.raises(ValueError) as e:
      rule()
    assert str(e.value) == want
