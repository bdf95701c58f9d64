"""Tests of moment_statistics and moments_from_state against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from balanced_optax import adam, alias, monitoring
from balanced_optax.moments import GradientMoments, tied_moments, variance_ema

GLOBAL_KEYS = {
  "snr_mean",
  "snr_median",
  "sign_dominated_fraction",
  "shrinkage_mean",
  "update_rms",
}


def _feed(tx, grads_T, params):
  """Runs tx over a stacked gradient sequence; returns (last updates, state)."""

  def step(state, g):
    updates, state = tx.update(g, state, params)
    return state, updates

  state, updates_T = jax.lax.scan(step, tx.init(params), grads_T)
  return jax.tree.map(lambda u: u[-1], updates_T), state


class TestMomentStatistics:
  def test_hand_computed_values(self):
    moments = GradientMoments(
      mean={"w": jnp.array([1.0, 0.5, 0.0])},
      variance={"w": jnp.array([0.25, 1.0, 4.0])},
    )
    stats = monitoring.moment_statistics(moments, eps=0.0)
    assert set(stats) == GLOBAL_KEYS
    # SNR = 4, 0.25, 0; rho = 2/sqrt(5), 1/sqrt(5), 0; mean rho^2 = 1/3.
    expected = {
      "snr_mean": 4.25 / 3,
      "snr_median": 0.25,
      "sign_dominated_fraction": 1 / 3,
      "shrinkage_mean": 3 / np.sqrt(5) / 3,
      "update_rms": np.sqrt(1 / 3),
    }
    for key, value in expected.items():
      assert float(stats[key]) == pytest.approx(value, rel=1e-6), key

  @pytest.mark.parametrize("make", [tied_moments, variance_ema])
  def test_constant_gradient(self, make):
    """Zero variance: every coordinate sign-dominated, no shrinkage, |d| = 1."""
    g = {"a": jnp.array([1.0, -2.0, 0.3]), "b": jnp.full((2, 2), -5.0)}
    grads_T = jax.tree.map(lambda x: jnp.broadcast_to(x, (30, *x.shape)), g)
    moments, _ = _feed(make(0.9), grads_T, g)
    stats = monitoring.moment_statistics(moments)
    assert float(stats["sign_dominated_fraction"]) == 1.0
    assert float(stats["shrinkage_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(stats["update_rms"]) == pytest.approx(1.0, abs=1e-6)
    # float32 leaves a rounding residue ~1e-7 * g^2 in the variance, not 0.
    assert float(stats["snr_median"]) > 1e5

  def test_exactly_zero_variance_uses_the_eps_floor(self):
    moments = GradientMoments(mean=jnp.array([1.0, -5.0]), variance=jnp.zeros(2))
    stats = monitoring.moment_statistics(moments, eps=1e-4)
    assert float(stats["snr_mean"]) == pytest.approx(13.0 / 1e-8, rel=1e-5)
    assert float(stats["shrinkage_mean"]) == pytest.approx(1.0, abs=1e-4)
    stats = monitoring.moment_statistics(moments, eps=0.0)
    assert float(stats["snr_mean"]) == np.inf

  def test_zero_coordinates_count_as_snr_zero(self):
    moments = GradientMoments(mean=jnp.zeros(4), variance=jnp.zeros(4))
    for eps in (1e-8, 0.0):  # Also no 0/0 NaN with eps = 0.
      stats = monitoring.moment_statistics(moments, eps=eps)
      for key in GLOBAL_KEYS:
        assert float(stats[key]) == 0.0, key

  def test_known_snr_stream_float64(self):
    """g_i ~ N(mu_i, sigma_i^2) with known SNR_i, through tied EMAs.

    beta = 0.999 averages ~2000 samples, so the estimated SNRs are within a
    few percent; float64 keeps v - m^2 free of cancellation error. No SNR is
    within a factor 2 of 1, so the sign-dominated fraction is exactly 1/2.
    """
    snr = np.concatenate(
      [np.logspace(-2, np.log10(0.5), 16), np.logspace(np.log10(2), 2, 16)]
    )
    sigma = np.linspace(0.5, 2.0, 32)
    mu = np.sqrt(snr) * sigma * np.where(np.arange(32) % 2, 1, -1)
    rho = np.sqrt(snr / (1 + snr))  # |mu| / sqrt(mu^2 + sigma^2)
    with jax.enable_x64(True):
      noise = jax.random.normal(jax.random.key(0), (20_000, 32), jnp.float64)
      grads_T = {
        "x": mu[:16] + sigma[:16] * noise[:, :16],
        "y": mu[16:] + sigma[16:] * noise[:, 16:],
      }
      params = jax.tree.map(lambda g: g[0], grads_T)
      _, state = _feed(alias.balanced_adam(1e-3, beta=0.999), grads_T, params)
      moments = monitoring.moments_from_state(state, beta=0.999)
      stats = monitoring.moment_statistics(moments, eps=0.0)
    assert float(stats["sign_dominated_fraction"]) == 0.5
    assert float(stats["snr_mean"]) == pytest.approx(snr.mean(), rel=0.1)
    assert float(stats["snr_median"]) == pytest.approx(np.median(snr), rel=0.1)
    assert float(stats["shrinkage_mean"]) == pytest.approx(rho.mean(), rel=0.02)
    assert float(stats["update_rms"]) == pytest.approx(
      np.sqrt(np.mean(rho**2)), rel=0.02
    )

  def test_per_leaf_keys_and_size_weighting(self):
    moments = GradientMoments(
      mean={"layers": [{"kernel": jnp.ones((2, 3))}], "bias": jnp.zeros(2)},
      variance={"layers": [{"kernel": jnp.zeros((2, 3))}], "bias": jnp.ones(2)},
    )
    stats = monitoring.moment_statistics(moments, per_leaf=True)
    assert set(stats) == GLOBAL_KEYS | {
      f"{key}/{leaf}" for key in GLOBAL_KEYS for leaf in ("layers/0/kernel", "bias")
    }
    assert float(stats["sign_dominated_fraction/layers/0/kernel"]) == 1.0
    assert float(stats["sign_dominated_fraction/bias"]) == 0.0
    assert float(stats["sign_dominated_fraction"]) == pytest.approx(6 / 8)
    assert float(stats["update_rms"]) == pytest.approx(np.sqrt(6 / 8), rel=1e-6)

  def test_median_can_be_skipped(self):
    moments = GradientMoments(mean={"w": jnp.ones(3)}, variance={"w": jnp.ones(3)})
    stats = monitoring.moment_statistics(moments, per_leaf=True, median=False)
    assert not any("median" in key for key in stats)
    assert set(stats) == (GLOBAL_KEYS - {"snr_median"}) | {
      f"{key}/w" for key in GLOBAL_KEYS - {"snr_median"}
    }

  def test_jit_matches_eager(self):
    key_m, key_v = jax.random.split(jax.random.key(3))
    moments = GradientMoments(
      mean={"a": jax.random.normal(key_m, (5, 4)), "b": jnp.arange(3.0)},
      variance={"a": jax.random.uniform(key_v, (5, 4)), "b": jnp.ones(3)},
    )
    eager = monitoring.moment_statistics(moments, per_leaf=True)
    jitted = jax.jit(lambda m: monitoring.moment_statistics(m, per_leaf=True))(moments)
    assert set(eager) == set(jitted)
    for key in eager:
      assert jitted[key].shape == ()
      np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-6, err_msg=key)

  def test_bf16_moments_are_reduced_in_float32(self):
    moments = GradientMoments(
      mean=jnp.ones(1000, jnp.bfloat16), variance=jnp.zeros(1000, jnp.bfloat16)
    )
    stats = monitoring.moment_statistics(moments)
    assert stats["update_rms"].dtype == jnp.float32
    assert float(stats["sign_dominated_fraction"]) == 1.0

  def test_rejects_none(self):
    with pytest.raises(TypeError, match="GradientMoments"):
      monitoring.moment_statistics(None)

  @pytest.mark.parametrize(
    "eps", [-1.0, float("nan"), float("inf"), "1e-8", True], ids=repr
  )
  def test_rejects_a_bad_eps_naming_it(self, eps):
    moments = GradientMoments({"w": jnp.ones(2)}, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"eps must be .*\[0\.0, inf\)"):
      monitoring.moment_statistics(moments, eps=eps)

  def test_rejects_moments_whose_trees_or_shapes_differ(self):
    """Pairing by flat order would report SNR 1e16 or broadcast (3,) against
    (3, 1): both are errors, naming what differs."""
    renamed = GradientMoments({"a": jnp.ones(2)}, {"x": jnp.zeros(2)})
    with pytest.raises(ValueError, match="different trees"):
      monitoring.moment_statistics(renamed)
    broadcast = GradientMoments({"w": jnp.ones(3)}, {"w": jnp.ones((3, 1))})
    with pytest.raises(ValueError, match=r"shape at w: \(3,\) and \(3, 1\)"):
      monitoring.moment_statistics(broadcast)


BETA = 0.9
PARAMS = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}


def _grads_T(steps=12):
  keys = iter(jax.random.split(jax.random.key(7), 2))
  return jax.tree.map(
    lambda p: jax.random.normal(next(keys), (steps, *p.shape)) + 0.5, PARAMS
  )


def _reference():
  """The moments tied_moments emits: mean = mu/c, variance = nu/c - mean^2."""
  moments, _ = _feed(tied_moments(BETA), _grads_T(), PARAMS)
  return moments


def _assert_moments_close(got, want, **tolerance):
  tolerance = {"rtol": 2e-5, "atol": 1e-6, **tolerance}
  for field in ("mean", "variance"):
    jax.tree.map(
      lambda g, w: np.testing.assert_allclose(g, w, **tolerance),
      getattr(got, field),
      getattr(want, field),
    )


class TestMomentsFromState:
  @pytest.mark.parametrize(
    "tx, beta",
    [
      (optax.adam(0.1, BETA, BETA), BETA),
      (optax.chain(optax.clip_by_global_norm(1e3), optax.adam(0.1, BETA, BETA)), BETA),
      (alias.balanced_adam(0.1, BETA), BETA),
      (alias.balanced_adam(0.1, BETA, scale_safe=True), BETA),
      (adam.scale_by_balanced_adam(BETA, scale_safe=True), BETA),
      (optax.apply_if_finite(alias.balanced_adam(0.1, BETA), 3), BETA),
      (
        optax.inject_hyperparams(alias.balanced_adam)(learning_rate=0.1, beta=BETA),
        None,
      ),
      (optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=BETA, b2=BETA), None),
      (optax.MultiSteps(alias.balanced_adam(0.1, BETA), every_k_schedule=1), BETA),
      (optax.chain(variance_ema(BETA), optax.scale(0.0)), None),
    ],
    ids=[
      "adam",
      "chain",
      "balanced_adam",
      "scale_safe",
      "scale_by_scale_safe",
      "apply_if_finite",
      "inject_beta",
      "inject_b1_b2",
      "multi_steps",
      "variance_ema",
    ],
  )
  def test_matches_tied_moments(self, tx, beta):
    _, state = _feed(tx, _grads_T(), PARAMS)
    moments = jax.jit(lambda s: monitoring.moments_from_state(s, beta))(state)
    _assert_moments_close(moments, _reference())

  def test_an_overflowed_second_moment_reads_as_tied_moments_emits_it(self):
    # g = 3e19 squares past float32's range: tied_moments emits variance inf
    # (the step there is 0), and so must the reading of optax.adam's state
    # (it gave NaN when monitoring had its own copy of the formula).
    grads = jnp.array([3e19, -2.0, 0.5], jnp.float32)
    estimator = tied_moments(BETA)
    want, _ = estimator.update(grads, estimator.init(grads))
    _, state = optax.adam(0.1, BETA, BETA).update(
      grads, optax.adam(0.1, BETA, BETA).init(grads)
    )
    got = monitoring.moments_from_state(state, BETA)
    np.testing.assert_array_equal(got.variance, want.variance)
    np.testing.assert_array_equal(got.mean, want.mean)
    assert np.isinf(got.variance[0])

  def test_untied_pair_uses_each_beta(self):
    b1, b2 = 0.8, 0.95
    _, state = _feed(optax.adam(0.1, b1, b2), _grads_T(), PARAMS)
    moments = monitoring.moments_from_state(state, beta=(b1, b2))
    count = 12
    mean = jax.tree.map(lambda m: m / (1 - b1**count), state[0].mu)
    second = jax.tree.map(lambda n: n / (1 - b2**count), state[0].nu)
    jax.tree.map(
      lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6),
      moments.mean,
      mean,
    )
    jax.tree.map(
      lambda got, m, s: np.testing.assert_allclose(
        got, np.maximum(s - m**2, 0), rtol=1e-5, atol=1e-7
      ),
      moments.variance,
      mean,
      second,
    )

  def test_masked_state(self):
    """optax.masked leaves MaskedNode holes in mu; they carry no coordinates."""
    tx = optax.masked(optax.adam(0.1, BETA, BETA), {"w": True, "b": False})
    _, state = _feed(tx, _grads_T(), PARAMS)
    moments = monitoring.moments_from_state(state, beta=BETA)
    np.testing.assert_allclose(moments.mean["w"], _reference().mean["w"], rtol=2e-5)
    stats = monitoring.moment_statistics(moments, per_leaf=True)
    assert "snr_mean/w" in stats and "snr_mean/b" not in stats

  def test_before_first_update_is_zero_not_nan(self):
    moments = monitoring.moments_from_state(
      optax.adam(0.1, BETA, BETA).init(PARAMS), beta=BETA
    )
    for leaf in jax.tree.leaves(moments):
      np.testing.assert_array_equal(leaf, 0.0)

  def test_no_moments_gives_none(self):
    assert (
      monitoring.moments_from_state(optax.sgd(0.1, momentum=0.9).init(PARAMS)) is None
    )

  def test_adam_state_without_beta_is_an_error(self):
    with pytest.raises(ValueError, match="beta"):
      monitoring.moments_from_state(optax.adam(0.1).init(PARAMS))

  @pytest.mark.parametrize(
    "beta, name",
    [
      (1.0, "beta"),  # debiasing by 1 - 1**t = 0: inf mean, NaN variance
      (1.5, "beta"),  # a negative mean from positive gradients
      (True, "beta"),
      ("0.9", "beta"),
      ((0.9,), "beta"),
      ((0.9, 1.0), r"beta\[1\]"),
      ({"w": -0.1}, r"beta\['w'\]"),
    ],
    ids=repr,
  )
  def test_rejects_a_bad_beta_naming_it(self, beta, name):
    _, state = _feed(optax.adam(0.1, BETA, BETA), _grads_T(), PARAMS)
    with pytest.raises(ValueError, match=name + " must be"):
      monitoring.moments_from_state(state, beta)

  def test_explicit_beta_overrides_hyperparams(self):
    tx = optax.inject_hyperparams(alias.balanced_adam)(learning_rate=0.1, beta=BETA)
    _, state = _feed(tx, _grads_T(), PARAMS)
    wrong = monitoring.moments_from_state(state, beta=0.5)
    assert not np.allclose(wrong.mean["b"], _reference().mean["b"])

  def test_flax_nnx_optimizer_state(self):
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = optax.inject_hyperparams(alias.balanced_adam)(learning_rate=0.1, beta=BETA)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    stats = jax.jit(
      lambda s: monitoring.moment_statistics(
        monitoring.moments_from_state(s), per_leaf=True
      )
    )(optimizer.opt_state)
    assert float(stats["sign_dominated_fraction"]) == 1.0
    assert {"update_rms/kernel", "update_rms/bias"} <= set(stats)


def _tied_reference(grads_T, beta):
  """float64 numpy tied moments of a gradient stream: (mean, variance)."""
  g = np.asarray(grads_T)
  g = g.astype(np.complex128 if np.iscomplexobj(g) else np.float64)
  weights = (1 - beta) * beta ** np.arange(len(g))[::-1]
  weights = weights / weights.sum()  # = the 1 / (1 - beta^k) debiasing.
  weights = weights.reshape(-1, *[1] * (g.ndim - 1))
  mean = np.sum(weights * g, axis=0)
  variance = np.sum(weights * np.abs(g) ** 2, axis=0) - np.abs(mean) ** 2
  return mean, variance


class TestSeveralMomentStates:
  """Partitioned optimizers: every group found, each debiased with its beta."""

  def _two_groups(self):
    labels = {"w": "matrix", "b": "vector"}
    tx = optax.partition(
      {
        "matrix": optax.inject_hyperparams(alias.balanced_adam)(0.1, beta=0.5),
        "vector": alias.balanced_adam(0.1, beta=0.9),
      },
      labels,
    )
    grads_T = _grads_T()
    _, state = _feed(tx, grads_T, PARAMS)
    return state, grads_T

  def test_two_balanced_groups_are_both_read_with_their_own_betas(self):
    state, grads_T = self._two_groups()
    moments = jax.jit(lambda s: monitoring.moments_from_state(s, {"vector": 0.9}))(
      state
    )
    for leaf, beta in (("w", 0.5), ("b", 0.9)):
      mean, variance = _tied_reference(grads_T[leaf], beta)
      np.testing.assert_allclose(moments.mean[leaf], mean, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(moments.variance[leaf], variance, atol=2e-5)
    # Both groups reach the statistics: 6 + 2 coordinates, each named.
    stats = monitoring.moment_statistics(moments, per_leaf=True, median=False)
    both = monitoring.moment_statistics(moments, median=False)
    w = monitoring.moment_statistics(
      GradientMoments(moments.mean["w"], moments.variance["w"]), median=False
    )
    b = monitoring.moment_statistics(
      GradientMoments(moments.mean["b"], moments.variance["b"]), median=False
    )
    np.testing.assert_allclose(
      both["shrinkage_mean"], (6 * w["shrinkage_mean"] + 2 * b["shrinkage_mean"]) / 8
    )
    assert {"snr_mean/w", "snr_mean/b"} <= set(stats)

  def test_a_group_without_a_beta_is_an_error_naming_it(self):
    state, _ = self._two_groups()
    with pytest.raises(ValueError, match=r"inner_states\['vector'\].*beta="):
      monitoring.moments_from_state(state)

  def test_one_beta_for_all_groups_overrides_hyperparams(self):
    state, grads_T = self._two_groups()
    moments = monitoring.moments_from_state(state, beta=0.9)
    mean, _ = _tied_reference(grads_T["w"], 0.9)
    # w's state holds beta=0.5 EMAs; debiased with 0.9 it is not the 0.9 mean.
    assert not np.allclose(moments.mean["w"], mean, rtol=1e-3)
    np.testing.assert_allclose(
      moments.mean["b"], _tied_reference(grads_T["b"], 0.9)[0], rtol=1e-5
    )

  def test_integer_partition_labels_name_their_betas(self):
    # optax.partition takes any hashable label; a beta mapping names the same.
    tx = optax.partition(
      {0: alias.balanced_adam(0.1, 0.5), 1: alias.balanced_adam(0.1, 0.9)},
      {"w": 0, "b": 1},
    )
    grads_T = _grads_T()
    _, state = _feed(tx, grads_T, PARAMS)
    moments = monitoring.moments_from_state(state, beta={0: 0.5, 1: 0.9})
    for leaf, beta in (("w", 0.5), ("b", 0.9)):
      mean, variance = _tied_reference(grads_T[leaf], beta)
      np.testing.assert_allclose(moments.mean[leaf], mean, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(moments.variance[leaf], variance, atol=2e-5)

  def test_muon_partition_skips_muons_empty_adam_state(self):
    labels = {"w": "matrices", "b": "vectors"}
    tx = optax.partition(
      {"matrices": optax.contrib.muon(0.1), "vectors": alias.balanced_adam(0.1, BETA)},
      labels,
    )
    grads_T = _grads_T()
    _, state = _feed(tx, grads_T, PARAMS)
    moments = monitoring.moments_from_state(state, beta=BETA)
    assert isinstance(moments.mean["w"], optax.MaskedNode)  # Muon holds no moments.
    mean, variance = _tied_reference(grads_T["b"], BETA)
    np.testing.assert_allclose(moments.mean["b"], mean, rtol=1e-5)
    np.testing.assert_allclose(moments.variance["b"], variance, atol=2e-5)
    stats = monitoring.moment_statistics(moments, per_leaf=True)
    assert "snr_mean/b" in stats and "snr_mean/w" not in stats

  def test_injected_muon_uses_its_adam_betas_not_its_momentum(self):
    tx = optax.inject_hyperparams(optax.contrib.muon)(
      learning_rate=0.1, beta=0.95, adam_b1=BETA, adam_b2=BETA
    )
    grads_T = _grads_T()
    _, state = _feed(tx, grads_T, PARAMS)
    moments = monitoring.moments_from_state(state)
    np.testing.assert_allclose(
      moments.mean["b"], _tied_reference(grads_T["b"], BETA)[0], rtol=1e-5
    )

  def test_only_empty_states_gives_none(self):
    tx = optax.contrib.muon(0.1)
    state = tx.init({"w": jnp.zeros((3, 2))})  # Its Adam group holds no leaf.
    assert monitoring.moments_from_state(state, beta=BETA) is None

  def test_two_states_over_the_same_coordinates_are_an_error(self):
    tx = optax.chain(optax.scale_by_adam(BETA, BETA), optax.scale_by_adam(BETA, BETA))
    with pytest.raises(ValueError, match="same coordinates"):
      monitoring.moments_from_state(tx.init(PARAMS), beta=BETA)

  def test_complex_moments_have_a_real_variance(self):
    rng = np.random.default_rng(1)
    grads_T = rng.normal(size=(12, 3)) + 1j * rng.normal(size=(12, 3)) + (1 - 2j)
    grads_T = jnp.asarray(grads_T, jnp.complex64)
    _, state = _feed(optax.adam(0.1, BETA, BETA), grads_T, jnp.zeros(3, jnp.complex64))
    moments = monitoring.moments_from_state(state, beta=BETA)
    mean, variance = _tied_reference(grads_T, BETA)
    assert moments.variance.dtype == jnp.float32
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(moments.variance, variance, rtol=1e-4)
    stats = monitoring.moment_statistics(moments, eps=0.0, median=False)
    snr = np.abs(mean) ** 2 / variance
    np.testing.assert_allclose(stats["snr_mean"], snr.mean(), rtol=1e-4)
    np.testing.assert_allclose(
      stats["shrinkage_mean"], np.mean(np.sqrt(snr / (1 + snr))), rtol=1e-5
    )


class TestFlaxNnxStates:
  def _optimizer(self):
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
      def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 4, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    model = Model(nnx.Rngs(0))
    labels = lambda p: jax.tree.map(lambda x: "matrix" if x.ndim == 2 else "vector", p)
    tx = optax.partition(
      {
        "matrix": optax.inject_hyperparams(alias.balanced_adam)(0.1, beta=0.5),
        "vector": alias.balanced_adam(0.1, beta=BETA),
      },
      labels,
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads_T = []
    for step in range(3):
      grads = jax.tree.map(
        lambda p, step=step: jnp.full_like(p, 1.0 + step), nnx.state(model, nnx.Param)
      )
      optimizer.update(model, grads)
      grads_T.append(1.0 + step)
    return nnx, optimizer, np.array(grads_T)

  def _check(self, moments, grads_T):
    names = {}
    for path, mean in jax.tree_util.tree_leaves_with_path(moments.mean):
      names[monitoring._leaf_name(path)] = mean
    assert set(names) == {"hidden/kernel", "hidden/bias", "head/kernel", "head/bias"}
    for name, mean in names.items():
      beta = 0.5 if name.endswith("kernel") else BETA
      np.testing.assert_allclose(mean, _tied_reference(grads_T, beta)[0], rtol=1e-6)

  def test_optimizer_opt_state(self):
    _, optimizer, grads_T = self._optimizer()
    moments = jax.jit(lambda s: monitoring.moments_from_state(s, {"vector": BETA}))(
      optimizer.opt_state
    )
    self._check(moments, grads_T)

  def test_split_state_of_a_jitted_step(self):
    nnx, optimizer, grads_T = self._optimizer()
    _, state = nnx.split(optimizer)  # What a pure jitted train step carries.

    @jax.jit
    def log(state):
      moments = monitoring.moments_from_state(state, {"vector": BETA})
      return moments, monitoring.moment_statistics(moments, per_leaf=True)

    moments, stats = log(state)
    self._check(moments, grads_T)
    assert {"update_rms/hidden/kernel", "update_rms/head/bias"} <= set(stats)

  def test_split_state_with_integer_labels(self):
    # nnx.split turns each chain's tuple into integer keys too: the label of
    # group 1 is its partition key 1, not the position 0 in its chain.
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    labels = lambda p: jax.tree.map(lambda x: x.ndim - 1, p)  # bias 0, kernel 1.
    tx = optax.partition(
      {0: alias.balanced_adam(0.1, 0.5), 1: alias.balanced_adam(0.1, BETA)}, labels
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for step in range(3):
      grads = jax.tree.map(
        lambda p, step=step: jnp.full_like(p, 1.0 + step), nnx.state(model, nnx.Param)
      )
      optimizer.update(model, grads)
    _, state = nnx.split(optimizer)
    moments = monitoring.moments_from_state(state, {0: 0.5, 1: BETA})
    mean = jax.tree_util.tree_leaves_with_path(moments.mean)
    means = {monitoring._leaf_name(path): value for path, value in mean}
    grads_T = np.array([1.0, 2.0, 3.0])
    for name, beta in (("bias", 0.5), ("kernel", BETA)):
      want = _tied_reference(grads_T, beta)[0]
      np.testing.assert_allclose(means[name], want, rtol=1e-6)


def test_a_beta_label_that_matches_no_group_is_an_error():
  tx = optax.partition(
    {"matrix": alias.balanced_adam(0.1, 0.5), "vector": alias.balanced_adam(0.1, 0.9)},
    {"w": "matrix", "b": "vector"},
  )
  with pytest.raises(ValueError, match=r"\['vectors'\].*inner_states\['matrix'\]"):
    monitoring.moments_from_state(tx.init(PARAMS), beta={"matrix": 0.5, "vectors": 0.9})
