"""The beta-selection benchmark's smoke run, and its helpers' arithmetic."""

import json

import numpy as np
import pytest

from benchmarks import beta_selection, workloads


def test_selection_grid_is_fh26c_grid():
  # 1 - beta = 10^(-k/4), k = 2..12, to 5 decimals as published.
  assert workloads.SELECTION_GRID[0] == 0.68377
  assert workloads.SELECTION_GRID[5] == 0.98222
  assert workloads.SELECTION_GRID[-1] == 0.999
  assert len(workloads.SELECTION_GRID) == 11


def test_cvar_is_mean_of_worst_quarter():
  gaps = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10]
  # ceil(0.25 * 11) = 3 worst: 0.10, 0.09, 0.08.
  assert beta_selection.cvar(gaps) == pytest.approx(0.09)
  assert beta_selection.summarize(gaps) == pytest.approx(
    {"mean": 0.05, "max": 0.10, "cvar25": 0.09}
  )


def test_key_snaps_to_the_grid():
  assert beta_selection.key(0.683772233983162) == "0.68377"
  assert beta_selection.key(0.95) == "0.94377"


@pytest.mark.slow
def test_train_grid_matches_separate_runs():
  # The vmapped grid is the same arithmetic as one run per beta.
  w = workloads.make_workload("quadratic", num_steps=30, eval_every=10)
  both = workloads.train_grid(w, betas=[0.9, 0.99])
  alone = workloads.train_grid(w, betas=[0.99])
  np.testing.assert_allclose(both.val_loss[1], alone.val_loss[0], rtol=1e-5)
  assert both.steps.tolist() == [0, 10, 20, 30]
  # Untrained: w = 0, loss 0.5 (|w*|_h^2 + sigma^2), identical for every beta.
  assert both.val_loss[0, 0] == both.val_loss[1, 0]
  assert np.all(both.best < both.val_loss[:, 0])


@pytest.mark.slow
def test_smoke_run_writes_results_and_figure(tmp_path, unoptimized_xla):
  out = tmp_path / "beta_selection.json"
  # The smoke run's time is mostly compiling (grid, untied grid, pilot,
  # probes); what it asserts does not depend on XLA's optimisation passes.
  with unoptimized_xla():
    report = beta_selection.main(["--size=smoke", f"--out={out}"])
  saved = json.loads(out.read_text())
  assert set(saved["workloads"]) == {"gpt_b16", "quadratic_b8"}
  for result in saved["workloads"].values():
    row = result["seeds"]["0"]
    gaps = row["gap"]
    # The oracle is the grid's best: its gap is 0 and no gap is negative.
    assert gaps[beta_selection.key(row["oracle_beta"])] == 0.0
    assert min(gaps.values()) == 0.0
    assert row["selector_gap"] == gaps[beta_selection.key(row["selector_beta"])]
    assert row["selection"]["gradient_evaluations"] == 20 + 16 * 4
  table = saved["summary"]["table"]
  fixed = saved["summary"]["fixed"][beta_selection.key(0.94377)]
  assert table["fixed 0.94377"] == pytest.approx(fixed)
  assert len(report["targets"]) == 4
  assert (tmp_path / "beta_selection.png").stat().st_size > 1000
