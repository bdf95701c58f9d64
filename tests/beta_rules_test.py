"""Tests of the beta-selection rules against closed forms."""

import fractions
import math

import numpy as np
import pytest

import balanced_optax as bo
from balanced_optax import beta_rules

# estimate_effective_horizon's smoothed, q < 1 variant (its default is [FH26b]'s).
ROBUST = {"fraction": 0.95, "window": None}


class TestHorizons:
  def test_memory_horizon(self):
    assert beta_rules.memory_horizon(0.9) == pytest.approx(10.0)
    assert beta_rules.memory_horizon(0.0) == 1.0
    np.testing.assert_allclose(beta_rules.memory_horizon([0.5, 0.99]), [2.0, 100.0])

  def test_memory_horizon_is_the_ema_weight_sum_of_ages_plus_one(self):
    beta = 0.95
    j = np.arange(5000)
    mean_age = np.sum((1 - beta) * beta**j * j)
    assert beta_rules.memory_horizon(beta) == pytest.approx(mean_age + 1)

  @pytest.mark.parametrize("beta", [0.5, 0.9, 0.95, 0.999])
  def test_half_life_halves_the_weight(self, beta):
    assert beta ** beta_rules.half_life(beta) == pytest.approx(0.5)

  def test_half_life_edge_and_vector(self):
    assert beta_rules.half_life(0.0) == 0.0
    np.testing.assert_allclose(beta_rules.half_life(np.array([0.5, 0.25])), [1.0, 0.5])

  def test_beta_from_half_life_inverts_half_life(self):
    steps = np.array([0.5, 1.0, 13.5, 1000.0])
    np.testing.assert_allclose(
      beta_rules.half_life(beta_rules.beta_from_half_life(steps)), steps
    )
    assert beta_rules.beta_from_half_life(1.0) == 0.5
    assert isinstance(beta_rules.beta_from_half_life(1.0), float)

  def test_beta_from_half_life_never_returns_one(self):
    with pytest.raises(ValueError, match=r"^steps must be in \(0.0, inf\)"):
      beta_rules.beta_from_half_life(math.inf)
    with pytest.raises(ValueError, match=r"steps=1e\+17\) gives beta = 1.0"):
      beta_rules.beta_from_half_life(1e17)
    assert 1 - beta_rules.beta_from_half_life(1e12) == pytest.approx(
      math.log(2) / 1e12, rel=1e-3
    )

  def test_beta_from_a_tiny_half_life_underflows_to_zero_as_documented(self):
    assert beta_rules.beta_from_half_life(1 / 1000) == pytest.approx(2.0**-1000)
    assert beta_rules.beta_from_half_life(1e-4) == 0.0  # 2**-10000: no memory


class TestRefresh:
  def test_refresh_count(self):
    assert beta_rules.refresh_count(0.95, 20_000) == pytest.approx(1000.0)
    np.testing.assert_allclose(
      beta_rules.refresh_count(0.99, [1e4, 1e5]), [100.0, 1000.0]
    )

  def test_beta_from_refresh_inverts_refresh_count(self):
    for t_es in [2_000.0, 18_000.0, 1e6]:
      beta = beta_rules.beta_from_refresh(t_es)
      assert beta_rules.refresh_count(beta, t_es) == pytest.approx(1000.0)
    # FH26b's fixed beta 0.944 is the refresh rule at T_ES = 1000 / 0.056.
    assert beta_rules.beta_from_refresh(1000 / 0.056) == pytest.approx(0.944)

  def test_short_runs_get_the_rules_limit_beta_zero(self):
    """T_ES <= R: 1 - R / T_ES <= 0, so the rule's answer is no memory."""
    assert beta_rules.beta_from_refresh(1000) == 0.0
    assert beta_rules.beta_from_refresh(1) == 0.0
    np.testing.assert_array_equal(
      beta_rules.beta_from_refresh([5000, 800, 1000]), [0.8, 0.0, 0.0]
    )
    assert beta_rules.beta_from_refresh(500, grid=beta_rules.BETA_GRID) == 0.0

  def test_short_runs_floored_by_beta_range(self):
    """The recommended prior: the selection range's floor 0.68377 [FH26c]."""
    selection_range = (0.68377, 0.999)
    got = beta_rules.beta_from_refresh(
      [200, 1000, 3000, 5000], beta_range=selection_range
    )
    np.testing.assert_allclose(got, [0.68377, 0.68377, 0.68377, 0.8], rtol=1e-15)
    snapped = beta_rules.beta_from_refresh(
      [200, 1000, 3000, 3500], grid=beta_rules.BETA_GRID, beta_range=selection_range
    )
    # 1 - 1000/3500 = 0.714 is nearer 0.68377 than 0.82217.
    np.testing.assert_array_equal(snapped, [beta_rules.BETA_GRID[2]] * 4)

  def test_beta_range_limits_the_grid(self):
    # Continuous 0.98 would snap to 0.98222; the range's grid tops out at 0.96838.
    got = beta_rules.beta_from_refresh(
      50_000, grid=beta_rules.BETA_GRID, beta_range=(0.5, 0.97)
    )
    assert got == beta_rules.BETA_GRID[6]
    # Clipped to 0.999 (the rule says 0.9999).
    assert beta_rules.beta_from_refresh(1e7, beta_range=(0.5, 0.999)) == 0.999

  @pytest.mark.parametrize(
    "beta_range, match",
    [
      ((0.9, 0.5), "beta_range must be \\(low, high\\)"),
      ((0.5,), "beta_range must be \\(low, high\\)"),
      ((0.5, 1.0), "beta_range must be in"),
      ((0.991, 0.994), "grid has no value inside beta_range"),
    ],
  )
  def test_bad_beta_range(self, beta_range, match):
    with pytest.raises(ValueError, match=match):
      beta_rules.beta_from_refresh(
        20_000, grid=beta_rules.BETA_GRID, beta_range=beta_range
      )

  def test_infinite_horizon_is_an_error_never_beta_one(self):
    with pytest.raises(ValueError, match=r"^t_es must be in \(0.0, inf\)"):
      beta_rules.beta_from_refresh(math.inf)
    with pytest.raises(ValueError, match=r"^refresh must be in \(0.0, inf\)"):
      beta_rules.beta_from_refresh(1e4, refresh=math.inf)
    # Finite but beyond float64: 1 - 1e3 / 1e20 rounds to 1.0.
    with pytest.raises(ValueError, match=r"t_es=1e\+20.* gives beta = 1.0"):
      beta_rules.beta_from_refresh(1e20)
    # A grid or a range gives an answer below 1 there.
    assert beta_rules.beta_from_refresh(1e20, grid=beta_rules.BETA_GRID) == 0.999
    assert beta_rules.beta_from_refresh(1e20, beta_range=(0.0, 0.99)) == 0.99

  def test_custom_refresh(self):
    assert beta_rules.beta_from_refresh(5000, refresh=100) == pytest.approx(0.98)
    with pytest.raises(ValueError, match="refresh"):
      beta_rules.beta_from_refresh(5000, refresh=0)


class TestFH26bSelections:
  """[FH26b]'s published T_ES -> beta on its 11 runs (Fernandez-Hernandez et
  al., Refresh-Scaling the Memory of Balanced Adam, arXiv 2605.10119; see
  docs/choosing_beta.md)."""

  RUNS = ((6000, 0.822),) + ((10_000, 0.9),) * 5 + ((20_000, 0.944),) * 2
  RUNS += ((30_000, 0.968),) * 2 + ((40_000, 0.968),)

  def test_published_selections(self):
    t_es, published = map(np.array, zip(*self.RUNS, strict=True))
    got = beta_rules.beta_from_refresh(t_es, grid=beta_rules.BETA_GRID)
    np.testing.assert_array_equal(np.round(got, 3), published)
    assert set(got.tolist()) <= set(beta_rules.BETA_GRID)
    # The continuous rule alone would not give these: 0.8333, 0.95, 0.9667, 0.975.
    continuous = beta_rules.beta_from_refresh(t_es)
    assert np.sum(np.round(continuous, 3) != published) == 6

  def test_the_exact_lattice_selects_the_same_points_on_the_11_runs(self):
    t_es = np.array([t for t, _ in self.RUNS])
    published = beta_rules.beta_from_refresh(t_es, grid=beta_rules.BETA_GRID)
    exact = beta_rules.beta_from_refresh(t_es, grid=TestGrid.EXACT)
    np.testing.assert_array_equal(np.round(exact, 5), published)

  def test_40000_is_the_closest_call(self):
    """0.975 lies 3e-4 below the midpoint 0.9753 of 0.96838 and 0.98222."""
    mid = (beta_rules.BETA_GRID[6] + beta_rules.BETA_GRID[7]) / 2
    assert mid - beta_rules.beta_from_refresh(40_000) == pytest.approx(3.0e-4, rel=1e-9)

  # [FH26b]'s stability intervals: T_ES where the snapped rule changes grid
  # value, 1000 / (1 - midpoint) of neighbouring 5-decimal grid values.
  BOUNDARIES = ((4048, 2), (7199, 3), (12802, 4), (22766, 5), (40486, 6))

  @pytest.mark.parametrize("boundary, below", BOUNDARIES)
  def test_published_stability_intervals(self, boundary, below):
    grid = beta_rules.BETA_GRID
    mid = (grid[below] + grid[below + 1]) / 2
    assert round(1000 / (1 - mid)) == boundary
    for beta_range in (None, (0.68377, 0.999)):
      got = beta_rules.beta_from_refresh(
        [boundary - 1, boundary + 1], grid=grid, beta_range=beta_range
      )
      assert got.tolist() == [grid[below], grid[below + 1]]

  def test_40484_gets_0_96838_as_in_fh26b(self):
    """The exact lattice's midpoint 0.975297 put 40484 above it (0.98222)."""
    assert beta_rules.beta_from_refresh(40_484, grid=beta_rules.BETA_GRID) == 0.96838
    assert beta_rules.beta_from_refresh(40_484, grid=TestGrid.EXACT) == pytest.approx(
      0.982217, abs=1e-6
    )


class TestBatchScaling:
  @pytest.mark.parametrize("kappa", [0.5, 2.0, 8.0])
  def test_half_life_in_steps_scales_by_one_over_kappa(self, kappa):
    """Same memory in samples: half-life(beta^kappa) = half-life(beta) / kappa."""
    scaled = beta_rules.scale_beta_for_batch(0.99, kappa)
    assert beta_rules.half_life(scaled) == pytest.approx(
      beta_rules.half_life(0.99) / kappa
    )

  def test_beta_that_rounds_to_one_is_an_error(self):
    with pytest.raises(ValueError, match=r"kappa=1e-30\) gives beta = 1.0"):
      beta_rules.scale_beta_for_batch(0.5, 1e-30)
    with pytest.raises(ValueError, match=r"^kappa must be in \(0.0, inf\)"):
      beta_rules.scale_beta_for_batch(0.5, math.inf)
    # Small but representable: ln(0.5) * 1e-12 = -6.9e-13, well above 2**-53.
    assert 1 - beta_rules.scale_beta_for_batch(0.5, 1e-12) == pytest.approx(
      math.log(2) * 1e-12, rel=1e-3
    )

  def test_values(self):
    assert beta_rules.scale_beta_for_batch(0.9, 2) == pytest.approx(0.81)
    np.testing.assert_allclose(
      beta_rules.scale_beta_for_batch([0.9, 0.5], 1.0), [0.9, 0.5]
    )


@pytest.mark.parametrize(
  "fn, args, name",
  [
    (beta_rules.memory_horizon, (1.0,), "beta"),
    (beta_rules.memory_horizon, ([0.5, -0.1],), "beta"),
    (beta_rules.half_life, (math.nan,), "beta"),
    (beta_rules.beta_from_half_life, (0.0,), "steps"),
    (beta_rules.refresh_count, (0.9, -1.0), "t_es"),
    (beta_rules.refresh_count, (1.5, 10.0), "beta"),
    (beta_rules.scale_beta_for_batch, (0.9, 0.0), "kappa"),
    (beta_rules.scale_beta_for_batch, (1.0, 2.0), "beta"),
    (beta_rules.in_convergence_region, (0.9, 1.0), "beta2"),
    (beta_rules.in_convergence_region, (-0.1, 0.9), "beta1"),
    (beta_rules.in_convergence_region, (0.9, 0.9, 1.2), "beta2_critical"),
  ],
)
def test_out_of_range_arguments_are_named(fn, args, name):
  with pytest.raises(ValueError, match=f"^{name} must be in"):
    fn(*args)


@pytest.mark.parametrize(
  "fn, args, name",
  [
    (beta_rules.memory_horizon, ("0.9",), "beta"),
    (beta_rules.memory_horizon, (True,), "beta"),
    (beta_rules.memory_horizon, ([0.5, None],), "beta"),
    (beta_rules.snap_beta, (0.9 + 0j,), "beta"),
    (beta_rules.beta_from_refresh, ("20000",), "t_es"),
    (beta_rules.beta_from_refresh, (2e4, True), "refresh"),
    (beta_rules.in_convergence_region, (0.9, "0.99"), "beta2"),
  ],
)
def test_non_numbers_are_rejected_not_converted(fn, args, name):
  """np.asarray("0.9", float) would parse the string; True would become 1.0."""
  with pytest.raises(ValueError, match=f"^{name} must be a number in"):
    fn(*args)


class TestConvergenceRegion:
  def test_standard_adam_is_inside(self):
    ok, reason = beta_rules.in_convergence_region(0.9, 0.999)
    assert ok
    assert "beta1 = 0.9 < sqrt(beta2) = 0.9995" in reason
    assert "beta2* is problem-dependent and not given" in reason

  def test_beta1_above_sqrt_beta2_is_outside(self):
    ok, reason = beta_rules.in_convergence_region(0.99, 0.9)  # sqrt(0.9) = 0.9487
    assert not ok
    assert "Outside [Z22]'s region: beta1 = 0.99 >= sqrt(beta2) = 0.948683" in reason
    assert "lower beta1 below 0.948683 or raise beta2 above beta1^2 = 0.9801" in reason

  def test_arrays_are_rejected(self):
    with pytest.raises(ValueError, match=r"^beta1 must be a scalar, got shape \(2,\)"):
      beta_rules.in_convergence_region([0.9, 0.95], 0.99)

  def test_zero_zero_advises_raising_beta2_not_lowering_beta1(self):
    """beta1 = 0 cannot go lower; only beta2 > 0 meets 0 < sqrt(beta2)."""
    ok, reason = beta_rules.in_convergence_region(0.0, 0.0)
    assert not ok
    assert "lower beta1" not in reason
    assert "beta1 = 0 >= sqrt(beta2) = 0 (raise beta2 above 0" in reason
    assert beta_rules.in_convergence_region(0.0, 1e-6)[0]

  @pytest.mark.parametrize("beta", [0.01, 0.5, 0.9, 0.95, 0.999])
  def test_balanced_adam_always_meets_the_sqrt_condition(self, beta):
    assert beta_rules.in_convergence_region(beta, beta)[0]

  def test_beta2_critical(self):
    ok, reason = beta_rules.in_convergence_region(0.95, 0.95, beta2_critical=0.999)
    assert not ok
    assert "Outside [Z22]'s region: beta2 = 0.95 < beta2* = 0.999" in reason
    ok, reason = beta_rules.in_convergence_region(0.999, 0.999, beta2_critical=0.999)
    assert ok
    assert (
      reason == "beta1 = 0.999 < sqrt(beta2) = 0.9995; beta2 = 0.999 >= beta2* = 0.999."
    )


class TestEffectiveHorizon:
  STEPS = np.arange(0, 10_001, 50)
  TAU = 1000.0

  def test_default_is_the_step_of_the_best_validation_loss(self):
    """[FH26b]'s reading: a 10,000-update run best at update 6000 -> 6000."""
    steps = np.arange(0, 10_001, 1000)
    val = [4.1, 3.2, 2.9, 2.75, 2.68, 2.65, 2.64, 2.645, 2.65, 2.66, 2.67]
    t_es = beta_rules.estimate_effective_horizon(val, steps)
    assert t_es == 6000.0
    assert (
      beta_rules.beta_from_refresh(t_es, grid=beta_rules.BETA_GRID)
      == (beta_rules.BETA_GRID[3])
    )

  def test_still_improving_gives_the_last_step(self):
    """Vision runs: T_ES = their total updates."""
    assert beta_rules.estimate_effective_horizon(self.curve(), self.STEPS) == 10_000

  @pytest.mark.parametrize(("n", "window"), [(10, 3), (29, 3), (30, 5), (100, 11)])
  def test_automatic_window_is_the_documented_odd_number(self, n, window):
    """window=None is 2 round(n / 20) + 1 evaluations (its docstring)."""
    rng = np.random.default_rng(n)
    val = 3 + np.exp(-np.arange(n) / (n / 6)) + 0.05 * rng.standard_normal(n)
    auto = beta_rules.estimate_effective_horizon(val, fraction=0.95, window=None)
    assert auto == beta_rules.estimate_effective_horizon(
      val, fraction=0.95, window=window
    )
    assert auto != beta_rules.estimate_effective_horizon(
      val, fraction=0.95, window=window + 2
    ) or auto != beta_rules.estimate_effective_horizon(
      val, fraction=0.95, window=max(window - 2, 1)
    )

  @pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
  def test_automatic_window_fits_short_curves(self, n):
    val = np.linspace(3.0, 1.0, n)
    t_es = beta_rules.estimate_effective_horizon(val, fraction=0.95, window=None)
    assert 0 < t_es <= n - 1

  def test_ties_go_to_the_first_evaluation_reaching_the_minimum(self):
    val = [3.0, 2.0, 1.0, 1.5, 1.0, 1.2]
    assert beta_rules.estimate_effective_horizon(val, [0, 10, 20, 30, 40, 50]) == 20
    assert beta_rules.estimate_effective_horizon([2.0, 1.0]) == 1.0

  def test_noise_moves_the_raw_argmin_but_not_the_robust_variant(self):
    rng = np.random.default_rng(0)
    noisy = self.curve() + 0.01 * rng.standard_normal(len(self.STEPS))
    raw = beta_rules.estimate_effective_horizon(noisy, self.STEPS)
    assert raw == self.STEPS[np.argmin(noisy)]
    robust = beta_rules.estimate_effective_horizon(noisy, self.STEPS, **ROBUST)
    assert robust == pytest.approx(self.exact(), rel=0.05)

  def exact(self, q=0.95):
    """T_ES of a + b exp(-t / tau) on [0, T]: the level L0 - q (L0 - L(T))."""
    return -self.TAU * math.log(1 - q * (1 - math.exp(-self.STEPS[-1] / self.TAU)))

  def curve(self, steps=None):
    steps = self.STEPS if steps is None else steps
    return 2.0 + 3.0 * np.exp(-steps / self.TAU)

  @pytest.mark.parametrize(
    "q, window",
    [(q, w) for q in (0.5, 0.9, 0.95, 0.99) for w in (1, None)] + [(1.0, 1)],
  )
  def test_exponential_decay(self, q, window):
    t_es = beta_rules.estimate_effective_horizon(
      self.curve(), self.STEPS, fraction=q, window=window
    )
    assert t_es == pytest.approx(self.exact(q), rel=2e-3)

  def test_non_uniform_steps(self):
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(np.arange(1, 10_000), size=300, replace=False))
    steps = np.concatenate([[0], steps, [10_000]])
    t_es = beta_rules.estimate_effective_horizon(self.curve(steps), steps, **ROBUST)
    assert t_es == pytest.approx(self.exact(), rel=1e-2)

  def test_default_steps_count_evaluations(self):
    t_es = beta_rules.estimate_effective_horizon(self.curve(), **ROBUST)
    assert t_es == pytest.approx(self.exact() / 50, rel=2e-3)

  @pytest.mark.parametrize("seed", range(5))
  def test_noisy_curve(self, seed):
    """Noise of 0.33% of the improvement (sigma = 0.01): within 5%."""
    rng = np.random.default_rng(seed)
    noisy = self.curve() + 0.01 * rng.standard_normal(len(self.STEPS))
    t_es = beta_rules.estimate_effective_horizon(noisy, self.STEPS, **ROBUST)
    assert t_es == pytest.approx(self.exact(), rel=0.05)

  def test_isolated_spikes_are_ignored(self):
    spiky = self.curve().copy()
    spiky[[3, 40, 120, 180]] += [5.0, -1.0, 3.0, -2.0]  # Two dips below L*.
    t_es = beta_rules.estimate_effective_horizon(spiky, self.STEPS, **ROBUST)
    assert t_es == pytest.approx(self.exact(), rel=1e-2)

  def test_plateau_then_overfitting(self):
    """L = 1 + 2 exp(-t/100) + 1e-3 t: best at t* = 100 ln 20, then rises."""
    steps = np.arange(0, 1001, 5.0)
    loss = lambda t: 1 + 2 * np.exp(-t / 100) + 1e-3 * t
    t_star = 100 * math.log(20)
    level = loss(0) - 0.95 * (loss(0) - loss(t_star))
    lo, hi = 0.0, t_star  # Bisection for loss(t) = level on the falling side.
    for _ in range(60):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if loss(mid) > level else (lo, mid)
    t_es = beta_rules.estimate_effective_horizon(loss(steps), steps, **ROBUST)
    assert t_es == pytest.approx(lo, rel=1e-2)
    assert t_es < t_star
    # Without the rise it is the pure exponential's T_ES, 1.5x later: the rise
    # ends the useful phase early.
    no_rise = beta_rules.estimate_effective_horizon(
      loss(steps) - 1e-3 * steps, steps, **ROBUST
    )
    assert no_rise == pytest.approx(
      -100 * math.log(1 - 0.95 * (1 - math.exp(-10))), rel=2e-3
    )

  def test_losses_near_the_float64_limit(self):
    """L_0 - q (L_0 - L*) overflowed (level -inf, then an IndexError): the level
    and the crossing are computed on halved losses, exactly."""
    assert beta_rules.estimate_effective_horizon([1e308, 0, -1e308], fraction=0.5) == 1
    # Level 0.5e308, a quarter of the way from 1e308 down to -1e308.
    assert beta_rules.estimate_effective_horizon([1e308, -1e308], fraction=0.25) == 0.25
    # Scaling the losses by a power of two does not move T_ES.
    curve = self.curve()
    assert beta_rules.estimate_effective_horizon(
      curve * 2.0**1021, self.STEPS, **ROBUST
    ) == beta_rules.estimate_effective_horizon(curve, self.STEPS, **ROBUST)

  def test_a_fraction_too_small_to_move_the_level_gives_the_first_step(self):
    """1 - 1e-300 (1 - 2) rounds to 1: no evaluation lies above the level
    (was an IndexError); the crossing is at t_0 + 1e-300 (t_1 - t_0)."""
    assert (
      beta_rules.estimate_effective_horizon([1.0, 0.0], [5, 7], fraction=1e-300) == 5
    )

  def test_fraction_one_is_the_early_stopping_point(self):
    steps = np.arange(0, 1001, 5.0)
    loss = 1 + 2 * np.exp(-steps / 100) + 1e-3 * steps
    t_es = beta_rules.estimate_effective_horizon(loss, steps, fraction=1.0, window=1)
    # The crossing of the minimum is interpolated between its two neighbours.
    assert abs(t_es - steps[np.argmin(loss)]) <= 5

  @pytest.mark.parametrize(
    "losses, steps, kwargs, match",
    [
      ([3.0], None, {}, "at least 2"),
      ([[3.0, 2.0]], None, {}, "1-D"),
      ([3.0, 2.0, np.nan, 1.0, 0.5], None, {}, "finite"),
      (["3.0", "2.0"], None, {}, "^val_losses must be real numbers"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], [0, 1, 1, 2, 3], {}, "increasing"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], [-1, 1, 2, 3, 4], {}, ">= 0"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], [0, 1, 2], {}, "shaped like"),
      ([3.0, 2.0], [False, True], {}, "^steps must be real numbers"),
      ([1.0, 2.0, 3.0, 4.0, 5.0], None, {}, "never improve"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"fraction": 0.0}, "^fraction must be in"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"fraction": True}, "^fraction must be a"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"window": 4}, "^window must be"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"window": True}, "^window must be"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"window": 3.0}, "^window must be"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"window": 7}, "^window must be"),
      ([3.0, 2.0, 1.5, 1.0, 0.5], None, {"window": -1}, "^window must be"),
    ],
  )
  def test_bad_input(self, losses, steps, kwargs, match):
    with pytest.raises(ValueError, match=match):
      beta_rules.estimate_effective_horizon(losses, steps, **kwargs)


class TestGrid:
  PUBLISHED = (
    0,
    0.43766,
    0.68377,
    0.82217,
    0.9,
    0.94377,
    0.96838,
    0.98222,
    0.99,
    0.99438,
    0.99684,
    0.99822,
    0.999,
  )

  EXACT = tuple(1.0 - 10.0 ** (-k / 4) for k in range(13))

  def test_grid_is_the_published_quarter_decade_lattice(self):
    """[FH26b]'s 5-decimal values, each 1 - 10^(-k/4) rounded."""
    assert beta_rules.BETA_GRID == self.PUBLISHED
    assert all(isinstance(b, float) for b in beta_rules.BETA_GRID)
    np.testing.assert_array_equal(np.round(self.EXACT, 5), self.PUBLISHED)
    np.testing.assert_allclose(
      -np.log10(1 - np.array(beta_rules.BETA_GRID)), np.arange(13) / 4, atol=5e-4
    )

  def test_snap_nearest_ties_to_smaller(self):
    assert beta_rules.snap_beta(0.95) == beta_rules.BETA_GRID[5]
    assert beta_rules.snap_beta(0.5, grid=(0.25, 0.75)) == 0.25
    assert beta_rules.snap_beta(0.0) == 0.0
    np.testing.assert_array_equal(
      beta_rules.snap_beta(np.array([[0.1, 0.89], [0.91, 0.97]]), grid=(0.99, 0.9)),
      [[0.9, 0.9], [0.9, 0.99]],
    )

  @pytest.mark.parametrize(
    "beta, grid, match",
    [
      (0.5, (), "^grid must be a non-empty 1-D sequence"),
      (0.5, [[0.1, 0.2]], "^grid must be a non-empty 1-D sequence"),
      (0.5, (0.9, 1.0), r"^grid must be in \[0.0, 1.0\)"),
      (0.5, ("0.9",), "^grid must be a number in"),
      (1.0, beta_rules.BETA_GRID, r"^beta must be in \[0.0, 1.0\)"),
      (np.nan, beta_rules.BETA_GRID, r"^beta must be in \[0.0, 1.0\)"),
    ],
  )
  def test_snap_validates(self, beta, grid, match):
    with pytest.raises(ValueError, match=match):
      beta_rules.snap_beta(beta, grid)


# --- [FH26c]'s tracking risk and noise/lag rule (moved from selection_test) --

SELECTION_GRID = (
  0.68377, 0.82217, 0.9, 0.94377, 0.96838, 0.98222, 0.99, 0.99438, 0.99684,
  0.99822, 0.999,
)  # fmt: skip


def _weights(beta, t):
  k = np.arange(t)
  return (1 - beta) * beta**k / (1 - beta**t) if beta > 0 else (k == 0) * 1.0


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
  relative, the bounds of the plain closed forms (whose worst case, t = 2 at
  beta = 0.999, cancels two terms near 999 to 0.4997); the stable forms now
  meet 1e-14 (test_tracking_risk_is_accurate_across_memories_and_histories)."""
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


def test_range_ends_and_grids_are_read_the_same_by_both_rules():
  """A range may be one memory, and both rules take the grid values within
  1e-5 of the range (a range written with rounded grid values keeps them)."""
  assert bo.beta_from_noise_and_lag(1.0, 1.0, beta_range=(0.9, 0.9), grid=None) == 0.9
  grid = (0.5, 0.900009, 0.95)
  for low, high in [(0.5, 0.9), (0.900009, 0.95), (0.9, 0.9)]:
    rule = bo.beta_from_noise_and_lag(1.0, 0.0, beta_range=(low, high), grid=grid)
    refresh = bo.beta_from_refresh(1e9, grid=grid, beta_range=(low, high))
    assert rule == refresh == (0.95 if high == 0.95 else 0.900009)


def _exact_sums(beta, t):
  """c = sum_k w(k)^2 and a = sum_k k w(k), exactly: w(k) = beta^k / sum_j
  beta^j, and with beta = n / d (d a power of two) the integers
  W_k = n^k d^(t-1-k) are proportional to beta^k."""
  n, d = fractions.Fraction(beta).as_integer_ratio()
  weights = [d ** (t - 1)]
  for _ in range(t - 1):
    weights.append(weights[-1] * n // d)
  total = sum(weights)
  c = fractions.Fraction(sum(w * w for w in weights), total * total)
  a = fractions.Fraction(sum(k * w for k, w in enumerate(weights)), total)
  return float(c), float(a)


@pytest.mark.parametrize("gap", [1e-9, 1e-10, 1e-11, 1e-12])
@pytest.mark.parametrize("t", [2, 3, 10, 100])
def test_tracking_risk_near_beta_one_matches_exact_sums(gap, t):
  """1 - beta^t and the mean age's two terms of about H cancelled: at
  beta = 1 - 1e-9 the risk V c + D a^2 of t = 2 was 1.5 (exact 0.75), of
  t = 10 81.1 (exact 20.35). Now both to a few ulps."""
  c, a = _exact_sums(1 - gap, t)
  assert bo.tracking_risk(1 - gap, t, 1.0, 0.0) == pytest.approx(c, rel=1e-14)
  assert bo.tracking_risk(1 - gap, t, 0.0, 1.0) == pytest.approx(a * a, rel=1e-14)
  assert bo.tracking_risk(1 - gap, t, 1.0, 1.0) == pytest.approx(c + a * a, rel=1e-14)


def test_tracking_risk_is_accurate_across_memories_and_histories():
  """Against exact sums on both sides of the switch between the closed form
  (t log(1/beta) >= 1) and the cancelled series (below), and beyond."""
  worst = 0.0
  for beta in (0.3, 0.5, 0.9, 0.99, 0.999, 1 - 1e-4, 1 - 1e-6, 1 - 1e-15):
    s = -math.log(beta)
    for t in {2, 3, 10, 40, 300, int(0.1 / s), int(0.1 / s) + 1, int(1 / s)}:
      if not 2 <= t <= 1000:
        continue
      c, a = _exact_sums(beta, t)
      worst = max(
        worst,
        abs(bo.tracking_risk(beta, t, 1.0, 0.0) / c - 1),
        abs(bo.tracking_risk(beta, t, 0.0, 1.0) ** 0.5 / a - 1),
      )
  assert worst < 1e-14


@pytest.mark.parametrize(
  "fn, args, message",
  [
    (
      bo.refresh_count,
      ([0.9, 0.95], [1e4, 2e4, 3e4]),
      "beta and t_es must broadcast together, got shapes beta (2,), t_es (3,).",
    ),
    (
      bo.beta_from_refresh,
      ([1e4, 2e4], [1e3, 2e3, 3e3]),
      "t_es and refresh must broadcast together, got shapes t_es (2,), refresh (3,).",
    ),
    (
      bo.scale_beta_for_batch,
      ([0.9, 0.95], [1.0, 2.0, 3.0]),
      "beta and kappa must broadcast together, got shapes beta (2,), kappa (3,).",
    ),
    (
      bo.tracking_risk,
      ([0.9, 0.95], [1, 2, 3], 1.0, 1.0),
      "beta, t, noise and change must broadcast together, got shapes beta (2,),"
      " t (3,), noise (), change ().",
    ),
    (
      bo.beta_from_noise_and_lag,
      ([1.0, 2.0], [1.0, 2.0, 3.0]),
      "noise and change must broadcast together, got shapes noise (2,), change (3,).",
    ),
  ],
  ids=["refresh_count", "beta_from_refresh", "batch", "risk", "noise_lag"],
)
def test_arrays_that_do_not_broadcast_are_named_with_their_shapes(fn, args, message):
  """Was numpy's 'operands could not be broadcast together', naming nothing."""
  with pytest.raises(ValueError) as e:
    fn(*args)
  assert str(e.value) == message
