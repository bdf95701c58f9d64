"""The beta-selection benchmark's smoke run, and its scoring on made-up numbers."""

import json
import math

import jax
import numpy as np
import pytest

import balanced_optax as bo
from benchmarks import beta_selection, workloads


def test_selection_grid_is_fh26c_grid():
  # 1 - beta = 10^(-k/4), k = 2..12, to 5 decimals as published.
  assert workloads.SELECTION_GRID[0] == 0.68377
  assert workloads.SELECTION_GRID[5] == 0.98222
  assert workloads.SELECTION_GRID[-1] == 0.999
  assert len(workloads.SELECTION_GRID) == 11


def test_benchmark_grid_is_the_published_grid_from_0_68377_to_0_99():
  assert beta_selection.GRID == tuple(b for b in bo.BETA_GRID if 0.68 < b <= 0.99)


def test_cvar_is_mean_of_worst_quarter():
  gaps = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10]
  # ceil(0.25 * 11) = 3 worst: 0.10, 0.09, 0.08.
  assert beta_selection.cvar(gaps) == pytest.approx(0.09)
  assert beta_selection.summarize(gaps) == pytest.approx(
    {"mean": 0.05, "max": 0.10, "cvar25": 0.09}
  )


def test_seed_scores_take_the_best_lr_and_ignore_divergence():
  best = np.array([[[2.0, 1.5, np.nan], [3.0, np.inf, 2.5]]])  # (S=1, B=2, K=3)
  np.testing.assert_array_equal(beta_selection.seed_scores(best), [[1.5, 2.5]])


def test_method_gap_is_ratio_of_seed_means_with_per_seed_gaps():
  # Seed means: 1.0, 1.2, 1.1: the oracle is beta index 0.
  scores = np.array([[1.0, 1.1, 1.2], [1.0, 1.3, 1.0]])
  gap = beta_selection.method_gap(scores, [1, 2])
  # Picks 1.1 (seed 0) and 1.0 (seed 1): mean 1.05 against 1.0.
  assert gap["gap"] == pytest.approx(0.05)
  assert gap["per_seed"] == pytest.approx([0.1, 0.0])
  # A fixed beta's gap is its seed mean's.
  assert beta_selection.method_gap(scores, [1, 1])["gap"] == pytest.approx(0.2)
  assert beta_selection.method_gap(scores, [0, 0])["gap"] == 0.0


def test_suite_summary_spreads_are_std_over_seeds_of_one_seeds_statistic():
  gaps = {
    "a": {"gap": 0.02, "per_seed": [0.01, 0.03]},
    "b": {"gap": 0.10, "per_seed": [0.12, 0.08]},
  }
  s = beta_selection.suite_summary(gaps)
  assert s["mean"] == pytest.approx(0.06)
  assert s["max"] == pytest.approx(0.10)
  assert s["cvar25"] == pytest.approx(0.10)  # ceil(0.25 * 2) = 1 worst
  # Seed 0: mean 0.065, max 0.12; seed 1: mean 0.055, max 0.08.
  assert s["per_seed_mean"] == pytest.approx([0.065, 0.055])
  assert s["mean_spread"] == pytest.approx(np.std([0.065, 0.055], ddof=1))
  assert s["max_spread"] == pytest.approx(np.std([0.12, 0.08], ddof=1))


def test_run_length_r_is_the_geometric_mean_of_the_published_ranges():
  og25, fh26b = math.sqrt(120 * 390), math.sqrt(178 * 1690)
  assert beta_selection.RUN_LENGTH_R == pytest.approx(math.sqrt(og25 * fh26b))
  assert beta_selection.RUN_LENGTH_R == pytest.approx(344.5, abs=0.1)


@pytest.mark.parametrize(
  "num_steps, beta",
  [
    (300, 0.68377),  # 1 - R/T < 0: the shortest memory
    (1500, 0.82217),  # 0.770, above the midpoint 0.753 of 0.68377 and 0.82217
    (3000, 0.9),  # 0.885
    (6200, 0.94377),  # 0.944: [OG25]'s 6,200-step oracle was 0.95
    (100_000, 0.99),
  ],
)
def test_run_length_beta(num_steps, beta):
  assert beta_selection.run_length_beta(num_steps) == beta


def test_refresh_beta_reads_the_early_stopping_point():
  steps = np.arange(0, 6000, 500)
  losses = np.abs(steps - 4500.0) + 1.0  # best at 4500
  t_es, beta = beta_selection.refresh_beta(steps, losses)
  assert t_es == 4500
  assert beta == bo.snap_beta(1 - 1000 / 4500, grid=beta_selection.GRID)
  # T_ES below R: the grid's shortest memory.
  assert beta_selection.refresh_beta(steps, np.abs(steps - 500.0)) == (500, 0.68377)


def test_lr_fit_recovers_a_known_slope():
  betas = np.asarray(beta_selection.GRID)
  x = np.log2(np.sqrt((1 + betas) / (1 - betas)))
  log_lr = np.log2(beta_selection.LR_SCALES)
  best = {}
  for name, slope in (("a", 0.3), ("b", 0.3)):
    center = slope * (x - x.mean())  # within +-0.4 of the reference lr
    loss = np.exp((log_lr[None, :] - center[:, None]) ** 2)  # (B, K)
    best[name] = np.stack([loss, 1.1 * loss])  # two seeds
  fit = beta_selection.lr_fit(best, beta_selection.GRID, beta_selection.LR_SCALES)
  assert fit["slope"] == pytest.approx(0.3, abs=1e-6)
  assert fit["slope_stderr"] == pytest.approx(0.0, abs=1e-6)
  assert fit["edge_fraction"] == 0.0


def test_lr_fit_counts_grid_edges():
  loss = np.tile([1.0, 2.0, 3.0], (len(beta_selection.GRID), 1))  # best at ref/2
  fit = beta_selection.lr_fit(
    {"a": loss[None]}, beta_selection.GRID, beta_selection.LR_SCALES
  )
  assert fit["edge_fraction"] == 1.0
  assert fit["slope"] == pytest.approx(0.0)


@pytest.mark.slow
def test_train_sweep_matches_train_grid_and_scales_the_lr(unoptimized_xla):
  with unoptimized_xla():
    w = workloads.make_workload("quadratic", num_steps=30, eval_every=10)
    sweep = workloads.train_sweep(w, [0.9, 0.99], lr_scales=(1.0, 2.0), seeds=(0, 1))
    grid = workloads.train_grid(w, betas=[0.9, 0.99], seed=1)
    doubled = workloads.make_workload(
      "quadratic", num_steps=30, eval_every=10, learning_rate=2 * w.learning_rate
    )
    grid2 = workloads.train_grid(doubled, betas=[0.9, 0.99], seed=1)
  assert sweep.val_loss.shape == (2, 2, 2, 4)
  np.testing.assert_allclose(sweep.val_loss[1, :, 0], grid.val_loss, rtol=1e-5)
  np.testing.assert_allclose(sweep.val_loss[1, :, 1], grid2.val_loss, rtol=1e-5)
  # Seeds see different data: their curves differ.
  assert not np.allclose(sweep.val_loss[0], sweep.val_loss[1])
  assert sweep.best.shape == (2, 2, 2)


@pytest.mark.slow
def test_noise_corrected_beta_is_select_betas(unoptimized_xla):
  w = workloads.make_workload("quadratic", num_steps=40, eval_every=10)
  betas = beta_selection.GRID
  options = dict(pilot_steps=20, lags=(2, 5, 10))
  with unoptimized_xla():
    published = beta_selection.select(w, 0, betas, **options)
    params = w.init(jax.random.key(0))
    corrected = bo.select_beta(
      lambda beta: w.optimizer(beta),
      jax.grad(w.loss),
      lambda step: w.train_batch(step, 0),
      params,
      seed=0,
      beta_range=(min(betas), max(betas)),
      grid=betas,
      change_estimate="noise_corrected",
      **options,
    )
  assert beta_selection.noise_corrected_beta(published, betas) == corrected.beta


@pytest.mark.slow
def test_smoke_run_writes_results_and_figure(tmp_path, unoptimized_xla):
  out = tmp_path / "beta_selection.json"
  # The smoke run's time is mostly compiling (sweep, untied sweep, pilots);
  # what it asserts does not depend on XLA's optimisation passes.
  with unoptimized_xla():
    report = beta_selection.main(["--size=smoke", f"--out={out}"])
  saved = json.loads(out.read_text())
  assert set(saved["workloads"]) == {"gpt_b16", "quadratic_b8"}
  summary = saved["summary"]
  table = summary["table"]
  for name, result in saved["workloads"].items():
    best = np.asarray(result["best"])
    assert best.shape == (2, 2, 2)  # seeds x betas x lrs
    assert np.asarray(result["val_loss"]).shape[:3] == (2, 2, 2)
    w = summary["workloads"][name]
    scores = best.min(axis=-1).mean(axis=0)
    # The oracle is the beta with the lowest seed-mean score: gap 0, none
    # negative.
    assert w["oracle_beta"] == result["betas"][int(np.argmin(scores))]
    fixed = {b: w["gap"][f"fixed {b:g}"] for b in result["betas"]}
    assert min(fixed.values()) == 0.0
    for b, gap in fixed.items():
      assert gap == pytest.approx(scores[result["betas"].index(b)] / scores.min() - 1)
    assert all(g >= 0 for g in w["gap"].values())
    for chosen in result["selections"]["select_beta"]:
      assert chosen["gradient_evaluations"] == 20 + 16 * 4
      assert chosen["beta"] in result["betas"]
    assert len(result["picks"]["refresh rule (R = 1000)"]) == 2
  # Best fixed in hindsight = argmin of the mean gap over fixed betas.
  fixed_means = {m: s["mean"] for m, s in table.items() if m.startswith("fixed ")}
  assert summary["hindsight"] == min(fixed_means, key=fixed_means.get)
  # The table's arithmetic: mean / max / CVaR25 of the per-workload gaps.
  for method, s in table.items():
    if method.startswith("best fixed"):
      method = summary["hindsight"]
    gaps = [w["gap"][method] for w in summary["workloads"].values()]
    assert s["mean"] == pytest.approx(np.mean(gaps))
    assert s["max"] == pytest.approx(max(gaps))
    assert s["cvar25"] == pytest.approx(max(gaps))  # 2 workloads: the worst
  assert "untied" in summary["workloads"]["gpt_b16"]
  assert [t["met"] for t in report["summary"]["targets"]] == [
    t["met"] for t in summary["targets"]
  ]
  assert (tmp_path / "beta_selection.png").stat().st_size > 1000
  # Re-analysis from the saved JSON gives the same table.
  again = beta_selection.main([f"--from-json={out}", f"--out={tmp_path / 'b.json'}"])
  assert json.loads(json.dumps(again["summary"]["table"])) == table
