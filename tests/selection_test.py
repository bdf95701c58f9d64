"""Early memory selection [FH26c]: closed forms, estimators, the pilot."""

import fractions
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax as bo
from balanced_optax import selection
from tests.subprocesses import run_on_8_devices

SELECTION_GRID = (
  0.68377, 0.82217, 0.9, 0.94377, 0.96838, 0.98222, 0.99, 0.99438, 0.99684,
  0.99822, 0.999,
)  # fmt: skip


def _weights(beta, t):
  k = np.arange(t)
  return (1 - beta) * beta**k / (1 - beta**t) if beta > 0 else (k == 0) * 1.0


# --- Closed forms ----------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 0.95537, 0.999])
@pytest.mark.parametrize("t", [1, 2, 7, 200, 5000])
def test_closed_forms_match_direct_sums_of_the_weights(beta, t):
  w = _weights(beta, t)
  c, a = np.sum(w**2), np.sum(np.arange(t) * w)
  np.testing.assert_allclose(np.sum(w), 1.0, rtol=1e-12)
  np.testing.assert_allclose(bo.tracking_risk(beta, t, 1.0, 0.0), c, rtol=1e-10)
  np.testing.assert_allclose(
    bo.tracking_risk(beta, t, 0.0, 1.0), a**2, rtol=1e-8, atol=1e-20
  )
  np.testing.assert_allclose(
    bo.tracking_risk(beta, t, 0.18, 4e-6), 0.18 * c + 4e-6 * a**2, rtol=1e-8
  )


def test_closed_forms_are_as_accurate_as_documented():
  """Against the exact sums in rational arithmetic: c to 2e-14, a to 3e-11
  relative (its worst case, t = 2 at beta = 0.999: two terms near 999
  cancel to 0.4997)."""
  worst_c = worst_a = 0.0
  for beta in (0.5, 0.9, 0.99, 0.999):
    for t in (2, 3, 10, 40):  # exact sums: t = 1000 takes 100 s
      b = fractions.Fraction(beta)
      w = [(1 - b) * b**k / (1 - b**t) for k in range(t)]
      c = sum(x * x for x in w)
      a = sum(k * x for k, x in enumerate(w))
      got_c = fractions.Fraction(bo.tracking_risk(beta, t, 1.0, 0.0))
      got_a = fractions.Fraction(bo.tracking_risk(beta, t, 0.0, 1.0)) ** 0.5
      worst_c = max(worst_c, float(abs(got_c - c) / c))
      worst_a = max(worst_a, abs(got_a - float(a)) / float(a))
  assert worst_c < 2e-14
  assert worst_a < 3e-11


def test_beta_zero_and_one_observation_keep_the_last_gradient():
  for beta, t in [(0.0, 1), (0.0, 50), (0.9, 1), (0.999, 1)]:
    assert bo.tracking_risk(beta, t, 2.0, 3.0) == 2.0  # c = 1, a = 0 exactly.


def test_long_history_limit_and_broadcasting():
  beta = np.array([0.0, 0.5, 0.9, 0.99])
  h = 1 / (1 - beta)
  got = bo.tracking_risk(beta[:, None], np.inf, np.array([0.18, 1.0]), 4e-6)
  want = np.array([0.18, 1.0]) / (2 * h[:, None] - 1) + 4e-6 * (h[:, None] - 1) ** 2
  assert got.shape == (4, 2)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  np.testing.assert_allclose(
    bo.tracking_risk(0.99, [10, 10_000], 1.0, 0.0),
    [bo.tracking_risk(0.99, 10, 1.0, 0.0), 0.01 / 1.99 * (1 + 0.99**10_000)],
    rtol=1e-12,
  )


def test_worked_case_of_the_cubic_rule():
  h_star = (0.18 / (4 * 4e-6)) ** (1 / 3)
  np.testing.assert_allclose(h_star, 22.407, atol=5e-4)
  beta = bo.beta_from_noise_and_lag(0.18, 4e-6, grid=None)
  np.testing.assert_allclose(beta, 0.95537, atol=5e-6)
  np.testing.assert_allclose(beta, 1 - 1 / h_star, rtol=1e-14)
  # 0.95537 is nearer 0.94377 (distance 0.0116) than 0.96838 (0.0130).
  np.testing.assert_allclose(bo.beta_from_noise_and_lag(0.18, 4e-6), 0.94377, atol=5e-6)


def test_the_cubic_horizon_minimises_the_large_horizon_risk():
  v, d = 0.18, 4e-6
  f0 = lambda h: v / (2 * h) + d * h**2
  h_star = 1 / (1 - bo.beta_from_noise_and_lag(v, d, grid=None))
  h = np.linspace(2, 200, 200_001)
  np.testing.assert_allclose(h[np.argmin(f0(h))], h_star, atol=1e-3)
  for z in [0.25, 0.5, 0.9, 1.0, 1.5, 2.0, 4.0]:
    np.testing.assert_allclose(
      f0(z * h_star) / f0(h_star), (2 / z + z**2) / 3, rtol=1e-12
    )
  # The exact finite-history risk is minimised within a few percent of H*.
  betas = np.linspace(0.9, 0.99, 9001)
  best = betas[np.argmin(bo.tracking_risk(betas, np.inf, v, d))]
  np.testing.assert_allclose(1 / (1 - best), h_star, rtol=0.05)


def test_zero_coefficients_clipping_and_the_selection_grid():
  low, high = bo.BETA_GRID[2], bo.BETA_GRID[12]
  assert bo.beta_from_noise_and_lag(0.18, 0.0) == high  # no drift: longest memory
  assert bo.beta_from_noise_and_lag(0.0, 4e-6) == low  # no noise: shortest
  assert bo.beta_from_noise_and_lag(0.0, 0.0) == low  # nothing measured: shortest
  np.testing.assert_allclose(
    bo.beta_from_noise_and_lag([0.18, 0.0, 0.0], [0.0, 4e-6, 0.0], grid=None),
    [0.999, 0.68377, 0.68377],
    rtol=1e-14,
  )
  # Clipping at the ends of the range.
  assert bo.beta_from_noise_and_lag(1e6, 1e-12) == high
  assert bo.beta_from_noise_and_lag(1e-12, 1.0, beta_range=(0.5, 0.9), grid=None) == 0.5
  # Every continuous beta snaps to one of the 11 values of [FH26c]'s grid.
  noise = np.logspace(-4, 2, 61)
  chosen = bo.beta_from_noise_and_lag(noise[:, None], np.logspace(-9, -1, 41))
  np.testing.assert_allclose(
    np.unique(chosen), SELECTION_GRID, atol=5e-6
  )  # and every one of them is reached.
  # A custom grid is restricted to the range too.
  assert (
    bo.beta_from_noise_and_lag(
      1.0, 1e-12, grid=(0.5, 0.9, 0.999), beta_range=(0.4, 0.95)
    )
    == 0.9
  )


@pytest.mark.parametrize(
  "kwargs, name",
  [
    ({"noise": -1.0, "change": 1.0}, "noise"),
    ({"noise": 1.0, "change": np.nan}, "change"),
    ({"noise": 1.0, "change": 1.0, "beta_range": (0.9, 0.5)}, "beta_range"),
    ({"noise": 1.0, "change": 1.0, "beta_range": (0.5, 1.0)}, "beta_range"),
    ({"noise": 1.0, "change": 1.0, "grid": (0.5, 1.0)}, "grid"),
    ({"noise": 1.0, "change": 1.0, "grid": (0.1, 0.2)}, "grid"),
    ({"noise": 1.0, "change": 1.0, "beta_range": ("0.7", "0.99")}, "beta_range"),
    ({"noise": 1.0, "change": 1.0, "beta_range": (False, 0.9)}, "beta_range"),
  ],
)
def test_rule_rejects_bad_input_naming_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=name):
    bo.beta_from_noise_and_lag(**kwargs)


@pytest.mark.parametrize(
  "args, name",
  [
    ((1.0, 10, 1.0, 1.0), "beta"),
    ((0.9, 0, 1.0, 1.0), "t"),
    ((0.9, 10, -1.0, 1.0), "noise"),
    ((0.9, 10, 1.0, -1.0), "change"),
    ((0.9, "10", 1.0, 1.0), "t"),  # was parsed as 10
    ((0.9, True, 1.0, 1.0), "t"),  # was t = 1
    ((0.9, "abc", 1.0, 1.0), "t"),
  ],
)
def test_risk_rejects_bad_input_naming_the_argument(args, name):
  with pytest.raises(ValueError, match=name):
    bo.tracking_risk(*args)


# --- The sketch and the estimators ----------------------------------------

_SHAPES = {"a": (40,), "b": (6, 5)}


_TEMPLATE = {k: np.zeros(s, np.float32) for k, s in _SHAPES.items()}


def _split(flat):
  return {"a": flat[..., :40], "b": flat[..., 40:].reshape(*flat.shape[:-1], 6, 5)}


def _sketch_matrix(seed=0, dim=1024):
  """P as a dense (dim, n) matrix: the sketch is linear, so P e_i column by column."""
  seeds = jnp.asarray(selection._leaf_seeds(len(_SHAPES), seed))
  sketch = jax.jit(lambda t: selection._sketch(t, seeds, dim))
  return np.stack(
    [np.asarray(sketch(_split(e))) for e in np.eye(70, dtype=np.float32)], 1
  )


def test_sketch_is_tensor_balanced_signed_buckets():
  p = _sketch_matrix()
  sizes = np.repeat([40, 30], [40, 30])
  assert np.all(np.count_nonzero(p, axis=0) == 1)  # one bucket per entry
  np.testing.assert_allclose(np.abs(p).sum(axis=0), sizes**-0.5, rtol=1e-6)
  signs = np.sign(p.sum(axis=0))
  assert 20 < np.sum(signs > 0) < 50  # both signs, about half each
  assert not np.array_equal(p, _sketch_matrix(seed=1))


def _sign_model(mu, a, rng, m):
  """g = +-a with E g = mu: g^2 = a^2 is constant, so r^ = mu^/a is linear."""
  plus = rng.random((m, *mu.shape)) < (1 + mu / a) / 2
  return np.where(plus, a, -a)


def test_probe_matches_a_numpy_reference():
  rng = np.random.default_rng(0)
  grads = rng.normal(size=(16, 70)) + 0.5
  probe = selection._Probe(lambda p, b: b, 16, 4, 1024, 1e-8, 0)
  z, z_groups = probe(_TEMPLATE, (_split(g.astype(np.float32)) for g in grads))
  direction = lambda g: g.mean(0) / (np.sqrt((g**2).mean(0)) + 1e-8)
  p = _sketch_matrix()
  np.testing.assert_allclose(z, p @ direction(grads), rtol=1e-5, atol=1e-6)
  want = np.stack([p @ direction(g) for g in grads.reshape(4, 4, 70)])
  np.testing.assert_allclose(z_groups, want, rtol=1e-5, atol=1e-6)


def test_noise_estimate_is_unbiased_monte_carlo():
  # The sign model makes the direction linear in the gradients, so V is known
  # exactly: V = sum_i (1 - mu_i^2 / a_i^2) / n_p(i). Tolerance: 4 standard
  # errors of the Monte Carlo mean (about 3% here).
  rng = np.random.default_rng(1)
  mu = rng.uniform(-0.8, 0.8, 70)
  a = np.ones(70)
  sizes = np.repeat([40, 30], [40, 30])
  v_true = np.sum((1 - mu**2 / a**2) / sizes)
  probe = selection._Probe(lambda p, b: b, 16, 4, 1024, 0.0, 0)
  estimates = []
  for _ in range(150):
    g = _sign_model(mu, a, rng, 16).astype(np.float32)
    z, z_groups = probe(_TEMPLATE, (_split(x) for x in g))
    estimates.append(selection._noise_estimate(z, z_groups, 16))
  estimates = np.array(estimates)
  se = estimates.std() / np.sqrt(len(estimates))
  assert abs(estimates.mean() - v_true) < 4 * se, (estimates.mean(), v_true, se)
  assert se < 0.01 * v_true


def test_noise_estimate_bias_for_gaussian_gradients_shrinks_with_group_size():
  # For Gaussian gradients r^ is nonlinear in the moments and V^ is unbiased
  # only to first order: the bias is O(G/m). Measured with this setup:
  # m/G = 4 -> +23%, m/G = 16 -> +6%, m/G = 64 -> +2% (cube root in H:
  # +7%, +2%, +1%). The delta-method V is the reference.
  rng = np.random.default_rng(2)
  p = _sketch_matrix()
  sizes = np.repeat([40, 30], [40, 30])
  mu = rng.choice([-1, 1], 70) * rng.uniform(0.5, 1.5, 70)
  sigma = 2 * np.abs(mu)
  q = mu**2 + sigma**2
  d_mu, d_q = 1 / np.sqrt(q), -mu / (2 * q**1.5)
  var = d_mu**2 * sigma**2 + 4 * mu * d_mu * d_q * sigma**2
  var += d_q**2 * (4 * mu**2 * sigma**2 + 2 * sigma**4)
  v_true = np.sum(var / sizes)
  bias = {}
  for m in (16, 64, 256):
    g = mu + sigma * rng.normal(size=(60_000 // m, m, 70))
    direction = lambda x: x.mean(-2) / np.sqrt((x**2).mean(-2))
    z = direction(g) @ p.T
    z_groups = direction(g.reshape(len(g), 4, m // 4, 70)) @ p.T
    v_hat = [
      selection._noise_estimate(a, b, m) for a, b in zip(z, z_groups, strict=True)
    ]
    bias[m] = np.mean(v_hat) / v_true - 1
  assert 0.15 < bias[16] < 0.32, bias
  assert 0.02 < bias[64] < bias[16] / 2, bias
  assert abs(bias[256]) < 0.05, bias


def test_lag_fit_is_unbiased_monte_carlo():
  # Drifting mean under the sign model: E z_t = P mu_t / a is linear in t, so
  # E y_n = D + (V_T + V_{T-n}) / (m n^2) exactly, and least squares (linear
  # in y) has the mean fit of those expectations. Tolerance: 4 standard errors.
  rng = np.random.default_rng(3)
  m, steps, lags = 16, 200, np.array([20, 50, 100])
  mu0, drift = rng.uniform(-0.3, 0.3, 70), rng.uniform(-0.01, 0.01, 70)
  sizes = np.repeat([40, 30], [40, 30])
  p = _sketch_matrix()
  mean_at = lambda t: mu0 + np.multiply.outer(t - 150, drift)  # |mu| < 0.9
  noise_at = lambda t: np.sum((1 - mean_at(t) ** 2) / sizes, axis=-1)
  d_true = np.sum((p @ drift) ** 2)
  expected_y = d_true + (noise_at(steps) + noise_at(steps - lags)) / (m * lags**2)
  want = selection._lag_fit(lags, expected_y)
  probe = selection._Probe(lambda p_, b: b, m, 4, 1024, 0.0, 0)
  fits = []
  for _ in range(40):
    z = {}
    for t in [*(steps - lags), steps]:
      g = _sign_model(mean_at(t), np.ones(70), rng, m).astype(np.float32)
      z[t] = probe(_TEMPLATE, (_split(x) for x in g))[0]
    y = np.array([np.sum((z[steps] - z[steps - n]) ** 2) / n**2 for n in lags])
    fits.append(selection._lag_fit(lags, y))
  fits = np.array(fits)
  se = fits.std(axis=0) / np.sqrt(len(fits))
  np.testing.assert_array_less(np.abs(fits.mean(axis=0) - want), 4 * se)
  assert np.all(se < [0.2 * want[0], 0.2 * want[1]]), (se, want)


def test_lag_fit_recovers_an_exact_model():
  lags = np.array([20, 50, 100])
  np.testing.assert_allclose(
    selection._lag_fit(lags, 3e-6 + 0.2 / lags**2), (3e-6, 0.2), rtol=1e-9
  )


# --- select_beta ------------------------------------------------------------


def _mlp_params(seed=0):
  rng = np.random.default_rng(seed)
  return {
    "hidden": {"w": rng.normal(size=(6, 16)).astype(np.float32) * 0.5,
               "b": np.zeros(16, np.float32)},
    "out": [rng.normal(size=(16, 2)).astype(np.float32) * 0.3, np.float32(0.0)],
  }  # fmt: skip


def _mlp_loss(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
  w, b = params["out"]
  return jnp.mean((h @ w + b - y) ** 2)


def _mlp_batch(k):
  rng = np.random.default_rng(1000 + k)
  x = rng.normal(size=(16, 6)).astype(np.float32)
  y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], 1) + 0.3 * rng.normal(size=(16, 2))
  return x, y.astype(np.float32)


def _recipe(beta):
  # Clipping that binds, a schedule and decoupled weight decay: the recipe is
  # the user's, whatever it holds.
  schedule = optax.cosine_decay_schedule(3e-2, 40)
  return optax.chain(
    optax.clip_by_global_norm(0.05),
    bo.balanced_adamw(schedule, beta=beta, weight_decay=1e-2),
  )


_SMALL = {"pilot_steps": 30, "lags": (5, 10, 20), "num_probes": 8}


@pytest.fixture(scope="module")
def mlp_run():
  """One small pilot on the MLP, recording the batches asked for and traces."""
  calls, traces = [], []

  def train_batch(k):
    calls.append(k)
    return _mlp_batch(k)

  def grad_fn(params, batch):
    traces.append(1)  # runs only while jax traces
    return jax.grad(_mlp_loss)(params, batch)

  sel = bo.select_beta(_recipe, grad_fn, train_batch, _mlp_params(), **_SMALL)
  return sel, calls, traces


def test_pilot_is_a_plain_training_loop_and_probes_use_unseen_batches(mlp_run):
  sel, calls, traces = mlp_run
  params = _mlp_params()
  tx = _recipe(0.95)
  step = jax.jit(lambda p, s, b: tx.update(jax.grad(_mlp_loss)(p, b), s, p))
  p, state = params, tx.init(params)
  for k in range(30):
    updates, state = step(p, state, _mlp_batch(k))
    p = optax.apply_updates(p, updates)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  jax.tree.map(close, sel.pilot_params, p)
  # The clipping binds (so a pilot that dropped it would end elsewhere).
  assert optax.tree.norm(jax.grad(_mlp_loss)(params, _mlp_batch(0))) > 0.1

  assert [k for k in calls if k < 30] == list(range(30))  # data order untouched
  assert sorted(k for k in calls if k >= 30) == list(range(30, 62))  # unseen batches
  assert sel.gradient_evaluations == 30 + 4 * 8
  assert len(traces) == 2  # compiled once: one pilot step, one probe gradient


def test_fields_are_consistent_and_the_summary_is_loggable(mlp_run):
  sel = mlp_run[0]
  assert sel.lags == (5, 10, 20) and len(sel.lag_changes) == 3
  assert sel.noise > 0 and sel.change > 0 and sel.seconds > 0
  np.testing.assert_allclose(sel.change, sel.lag_intercept + sel.lag_slope / 20**2)
  np.testing.assert_allclose(
    (sel.lag_intercept, sel.lag_slope),
    np.maximum(selection._lag_fit(np.array(sel.lags), np.array(sel.lag_changes)), 0),
  )
  np.testing.assert_allclose(sel.horizon, 1 / (1 - sel.beta_continuous), rtol=1e-12)
  assert sel.beta_continuous == bo.beta_from_noise_and_lag(
    sel.noise, sel.change, grid=None
  )
  assert sel.beta == bo.beta_from_noise_and_lag(sel.noise, sel.change)
  record = json.loads(json.dumps(sel.as_dict()))
  assert record["beta"] == sel.beta and "pilot_params" not in record
  assert f"beta={sel.beta:.5f}" in sel.report() and "62 gradients" in sel.report()


def test_deterministic_for_a_fixed_seed(mlp_run):
  again = bo.select_beta(
    _recipe, jax.grad(_mlp_loss), _mlp_batch, _mlp_params(), seed=0, **_SMALL
  )
  drop = lambda s: {k: v for k, v in s.as_dict().items() if k != "seconds"}
  assert drop(again) == drop(mlp_run[0])
  jax.tree.map(
    np.testing.assert_array_equal, again.pilot_params, mlp_run[0].pilot_params
  )


def test_defaults_on_linear_regression():
  rng = np.random.default_rng(0)
  w_true = rng.normal(size=(10,)).astype(np.float32)

  def batch(k):
    r = np.random.default_rng(k)
    x = r.normal(size=(32, 10)).astype(np.float32)
    return x, x @ w_true + r.normal(size=32).astype(np.float32)

  loss = lambda p, b: jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)
  params = {"w": jnp.zeros(10), "b": jnp.zeros(())}
  sel = bo.select_beta(
    lambda beta: bo.balanced_adam(1e-2, beta), jax.grad(loss), batch, params
  )
  assert sel.gradient_evaluations == 264 and sel.pilot_steps == 200
  assert sel.lags == (20, 50, 100) and sel.num_probes == 16
  assert np.isclose(SELECTION_GRID, sel.beta, atol=5e-6).any()
  # The pilot converged towards w_true: the measurement saw a trained model.
  assert np.abs(sel.pilot_params["w"] - w_true).max() < 0.5


def test_select_beta_measures_known_noise_and_drift():
  # The sign model again, as a gradient stream (grad_fn returns the batch):
  # the direction drifts linearly in time with known V and D.
  n, m = (400, 300), 64
  rng = np.random.default_rng(4)
  drift = {k: rng.choice([-1, 1], s) * 0.003 for k, s in zip("ab", n, strict=True)}
  params = {k: np.zeros(s, np.float32) for k, s in zip("ab", n, strict=True)}
  checkpoints = (100, 150, 180, 200)

  def sample(t, seed):
    r = np.random.default_rng(seed)
    mean = {k: (t - 150) * d for k, d in drift.items()}  # |mean| <= 0.45
    return {k: np.where(r.random(mu.shape) < (1 + mu) / 2, 1.0, -1.0).astype(np.float32)
            for k, mu in mean.items()}  # fmt: skip

  sel = bo.select_beta(
    lambda beta: optax.sgd(0.0),
    lambda p, b: b,
    lambda k: sample(k, k),
    params,
    probe_batch=lambda i: sample(checkpoints[i // m], 10**6 + i),
    num_probes=m,
    grid=None,
  )
  v_true = sum(np.mean(1 - (50 * d) ** 2) for d in drift.values())
  d_true = sum(np.mean(d**2) for d in drift.values())
  target = d_true + 2 * v_true / (m * 100**2)  # D^ = I + C/L^2 keeps C/L^2
  np.testing.assert_allclose(sel.noise, v_true, rtol=0.1)
  np.testing.assert_allclose(sel.lag_intercept, d_true, rtol=0.3)
  np.testing.assert_allclose(sel.change, target, rtol=0.2)
  want = bo.beta_from_noise_and_lag(v_true, target, grid=None)
  np.testing.assert_allclose(sel.horizon, 1 / (1 - want), rtol=0.1)


def test_nnx_state_params():
  from flax import nnx

  model = nnx.Linear(6, 2, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  loss = lambda s, b: jnp.mean((nnx.merge(graphdef, s)(b[0]) - b[1]) ** 2)
  sel = bo.select_beta(_recipe, jax.grad(loss), _mlp_batch, state, **_SMALL)
  assert isinstance(sel.pilot_params, nnx.State)
  assert sel.noise > 0 and np.isfinite(sel.beta)


@pytest.mark.parametrize(
  "kwargs, name",
  [
    ({"num_probes": 10}, "num_probes"),
    ({"num_probes": 2, "num_groups": 4}, "num_probes"),
    ({"num_groups": 1}, "num_groups"),
    ({"lags": (20, 200)}, "lags"),
    ({"lags": (0, 20)}, "lags"),
    ({"lags": (20, 20)}, "lags"),
    ({"lags": (2.5, 20)}, "lags"),
    ({"pilot_steps": 0}, "pilot_steps"),
    ({"pilot_beta": 1.0}, "pilot_beta"),
    ({"sketch_dim": 0}, "sketch_dim"),
    ({"eps": -1.0}, "eps"),
    ({"beta_range": (0.9, 0.8)}, "beta_range"),
    ({"beta_range": ("0.7", "0.99")}, "beta_range"),
    ({"grid": (0.5, 1.2)}, "grid"),
    ({"grid": (0.1, 0.2)}, "grid"),
    ({"lags": 5}, "lags"),  # was a TypeError
    ({"params": {}}, "params hold no coordinates"),  # was a beta from nothing
    ({"params": {"w": np.zeros(0)}}, "params hold no coordinates"),
  ],
  ids=repr,
)
def test_select_beta_rejects_bad_input_before_training(kwargs, name):
  def never(*_):
    raise AssertionError("called before the arguments were checked")

  kwargs = {"params": {"w": np.zeros(3)}, **kwargs}
  with pytest.raises(ValueError, match=name):
    bo.select_beta(never, never, never, **kwargs)


def test_range_ends_and_grids_are_read_the_same_by_both_rules():
  """A range may be one memory, and both rules take the grid values within
  1e-5 of the range (a range written with rounded grid values keeps them)."""
  assert bo.beta_from_noise_and_lag(1.0, 1.0, beta_range=(0.9, 0.9), grid=None) == 0.9
  grid = (0.5, 0.900009, 0.95)
  for low, high in [(0.5, 0.9), (0.900009, 0.95), (0.9, 0.9)]:
    rule = bo.beta_from_noise_and_lag(1.0, 0.0, beta_range=(low, high), grid=grid)
    refresh = bo.beta_from_refresh(1e9, grid=grid, beta_range=(low, high))
    assert rule == refresh == (0.95 if high == 0.95 else 0.900009)


_SHARDED_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  import balanced_optax as bo
  from balanced_optax import selection
  from tests.selection_test import _SMALL, _mlp_batch, _mlp_loss, _mlp_params, _recipe

  assert jax.device_count() == 8
  params = _mlp_params()
  specs = {"hidden": {"w": P(None, "fsdp"), "b": P("fsdp")}, "out": [P("fsdp"), P()]}
  ref = bo.select_beta(_recipe, jax.grad(_mlp_loss), _mlp_batch, params, **_SMALL)
  for axis_type in (AxisType.Explicit, AxisType.Auto):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(axis_type,))
    put = lambda x, s: jax.device_put(x, NamedSharding(mesh, s))
    sharded = jax.tree.map(put, params, specs)
    # FSDP: the weights are gathered for the forward pass (explicit axes say so).
    gather = lambda p: jax.tree.map(
      lambda x: jax.sharding.reshard(x, NamedSharding(mesh, P())), p
    )
    loss = _mlp_loss
    if axis_type == AxisType.Explicit:
      loss = lambda p, b: _mlp_loss(gather(p), b)
    sel = bo.select_beta(_recipe, jax.grad(loss), _mlp_batch, sharded, **_SMALL)
    for f in ("noise", "change", "lag_intercept", "lag_slope", "beta_continuous"):
      np.testing.assert_allclose(getattr(sel, f), getattr(ref, f), rtol=2e-4)
    assert sel.beta == ref.beta
    for x, s in zip(jax.tree.leaves(sel.pilot_params), jax.tree.leaves(specs)):
      assert x.sharding.is_equivalent_to(NamedSharding(mesh, s), x.ndim), s
    # The sketch reduces per-device partial sums; it never gathers a gradient.
    seeds = jnp.asarray(selection._leaf_seeds(4, 0))
    hlo = jax.jit(lambda t: selection._sketch(t, seeds, 1024)).lower(sharded).compile()
    assert "all-gather" not in hlo.as_text()
  print("SHARDED OK")
  """
)


@pytest.mark.slow
def test_fsdp_sharded_params_on_8_devices():
  run_on_8_devices(_SHARDED_SCRIPT, "SHARDED OK")
