"""balanced_muon against optax.contrib.muon(adam_b1 = adam_b2) and its options."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax as bo
from balanced_optax import monitoring

PARAMS = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3), "t": jnp.zeros((2, 2, 2))}


def _grads(steps=15, seed=0):
  rng = np.random.default_rng(seed)
  return [
    jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape) + 0.3, jnp.float32), PARAMS
    )
    for _ in range(steps)
  ]


def _run(tx, grads, params=PARAMS):
  """Trains over the stream; returns (every step's updates, final state)."""
  state, update = tx.init(params), jax.jit(tx.update)
  history = []
  for g in grads:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
    history.append(updates)
  return history, state


@pytest.mark.parametrize(
  "options",
  [
    {},
    {"adam_beta": 0.9, "adam_learning_rate": 3e-3, "adam_weight_decay": 0.1},
    {"nesterov": False, "adam_eps_root": 1e-6, "weight_decay": 0.05},
  ],
  ids=["defaults", "adam_options", "no_nesterov"],
)
def test_equals_optax_muon_with_tied_adam_betas(options):
  optax_options = dict(options)
  b = optax_options.pop("adam_beta", 0.95)  # None would mean beta = 0.95 too.
  optax_options.update(adam_b1=b, adam_b2=b)
  got, _ = _run(bo.balanced_muon(0.01, beta=0.95, **options), _grads())
  want, _ = _run(optax.contrib.muon(0.01, beta=0.95, **optax_options), _grads())
  for step, (u, v) in enumerate(zip(got, want, strict=True)):
    # Muon's leaf runs optax's own code: bitwise equal.
    np.testing.assert_array_equal(u["w"], v["w"], err_msg=f"step {step}")
    for leaf in ("b", "t"):
      np.testing.assert_allclose(u[leaf], v[leaf], rtol=2e-5, atol=1e-9)


def test_dimension_numbers_send_embeddings_to_adam():
  params = {"embed": jnp.ones((6, 3)), "hidden": jnp.ones((3, 3)), "bias": jnp.ones(3)}

  def dims(params):
    return {
      "embed": None,
      "hidden": optax.contrib.MuonDimensionNumbers(),
      "bias": None,
    }

  rng = np.random.default_rng(2)
  grads = [
    jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    for _ in range(5)
  ]
  got, state = _run(
    bo.balanced_muon(0.02, muon_weight_dimension_numbers=dims), grads, params
  )
  # The embedding is an Adam leaf: balanced Adam with Nesterov (as optax's).
  adam, _ = _run(
    optax.adam(0.02, 0.95, 0.95, nesterov=True),
    [{"embed": g["embed"], "bias": g["bias"]} for g in grads],
    {"embed": params["embed"], "bias": params["bias"]},
  )
  muon, _ = _run(
    optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims), grads, params
  )
  for u, a, m in zip(got, adam, muon, strict=True):
    np.testing.assert_allclose(u["embed"], a["embed"], rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(u["bias"], a["bias"], rtol=2e-5, atol=1e-9)
    np.testing.assert_array_equal(u["hidden"], m["hidden"])
  moments = bo.moments_from_state(state, beta=0.95)
  assert isinstance(moments.mean["hidden"], optax.MaskedNode)
  assert moments.mean["embed"].shape == (6, 3)


def test_balanced_adam_options_reach_the_adam_half():
  tx = bo.balanced_muon(0.01, state_dtype="bfloat16", scale_safe=True)
  _, state = _run(tx, _grads(3))
  adam_state = state.inner_states["adam"].inner_state[0]
  assert isinstance(adam_state, bo.ScaleSafeAdamState)
  assert adam_state.mu["b"].dtype == jnp.bfloat16
  assert isinstance(adam_state.mu["w"], optax.MaskedNode)


def test_guard_holds_adam_moments_where_optax_muon_is_poisoned():
  grads = _grads(4)
  grads[2] = {**grads[2], "b": grads[2]["b"].at[0].set(jnp.nan)}
  got, state = _run(bo.balanced_muon(0.01), grads)
  want, _ = _run(optax.contrib.muon(0.01, adam_b1=0.95, adam_b2=0.95), grads)
  assert np.isnan(want[-1]["b"][0])
  assert np.all(np.isfinite(got[-1]["b"]))
  np.testing.assert_allclose(got[-1]["b"][1:], want[-1]["b"][1:], rtol=2e-5)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_moment_statistics_under_inject_hyperparams_read_adam_beta():
  tx = optax.inject_hyperparams(bo.balanced_muon)(
    learning_rate=0.01, beta=0.95, adam_beta=0.8
  )
  grads = _grads(6)
  _, state = _run(tx, grads)
  moments = monitoring.moments_from_state(state)
  g = np.stack([np.asarray(x["b"], np.float64) for x in grads])
  weights = 0.2 * 0.8 ** np.arange(len(g))[::-1]
  mean = (weights[:, None] * g).sum(0) / weights.sum()
  np.testing.assert_allclose(moments.mean["b"], mean, rtol=1e-5)
  assert isinstance(moments.mean["w"], optax.MaskedNode)
  stats = bo.moment_statistics(moments, per_leaf=True, median=False)
  assert {"snr_mean/b", "snr_mean/t"} <= set(stats)
  assert "snr_mean/w" not in stats


@pytest.mark.parametrize(
  "kwargs, name",
  [
    ({"beta": 1.0}, "beta"),
    ({"adam_beta": -0.1}, "adam_beta"),
    ({"eps": -1.0}, "eps"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"weight_decay": float("nan")}, "weight_decay"),  # was NaN updates
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"ns_steps": 0}, "ns_steps"),  # was no orthogonalisation at all
    ({"ns_steps": 2.5}, "ns_steps"),
    ({"mu_dtype": "bf16"}, "mu_dtype"),  # was a TypeError
    # The Adam half's arguments are named as balanced_muon's, not as the
    # balanced_adamw arguments they are forwarded to.
    ({"adam_weight_decay": -1.0}, "adam_weight_decay"),
    ({"adam_eps_root": -1.0}, "adam_eps_root"),
    ({"adam_learning_rate": -1.0}, "adam_learning_rate"),
  ],
  ids=repr,
)
def test_bad_hyperparameters_are_value_errors_naming_them(kwargs, name):
  kwargs = {"learning_rate": 0.01, **kwargs}
  with pytest.raises(ValueError, match=f"^{name} must"):
    bo.balanced_muon(**kwargs)
