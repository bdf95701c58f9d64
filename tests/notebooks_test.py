"""Executes evidence notebooks at NOTEBOOK_SIZE=tiny and checks one real number each.

Each notebook runs top to bottom in a fresh kernel inside a temporary directory
(so the committed figures and results beside the notebooks stay untouched),
must write its figure, and writes ``<name>_results.json``, from which the test
reads a number that holds even at the tiny size. To add a notebook, append a
``(name, check)`` pair to ``NOTEBOOKS``.
"""

import json
import os
import pathlib

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"


def check_variance_as_ema(results):
  # v = m^2 + s holds to rounding in both precisions, and Adam's step equals
  # sign(mean) / sqrt(1 + var / mean^2).
  assert results["identity_max_rel_f64"] < 1e-12
  assert results["identity_max_rel_f32"] < 1e-5
  assert results["step_max_err_f64"] < 1e-12
  assert results["step_max_err_f32"] < 1e-5
  # The shrinkage is a fraction: 0 < rho <= 1 at every snapshot.
  for snapshot in results["rho_snapshots"].values():
    assert 0 < snapshot["median"] <= 1


def check_heterogeneous_quadratic(results):
  final = results["settings"]["noise-free"]["final_loss"]
  assert final["balanced Adam"] < final["SGD"] < results["f0"]


def check_convergence_region(results):
  # [R18] Theorem 1's instance: beta1 = 0, beta2 = 1 / (1 + C^2) ends at the
  # wrong end x = +1; beta2 = 0.999 ends at the optimum x = -1.
  assert results["r18_instance"]["final_x_small_beta2"] > 0.9
  assert results["r18_instance"]["final_x_beta2_0p999"] < -0.9


NOTEBOOKS = [
  ("variance_as_ema", check_variance_as_ema),
  ("heterogeneous_quadratic", check_heterogeneous_quadratic),
  ("convergence_region", check_convergence_region),
]


@pytest.mark.parametrize(
  ("name", "check"), NOTEBOOKS, ids=[name for name, _ in NOTEBOOKS]
)
def test_notebook_runs_tiny(name, check, tmp_path, monkeypatch):
  monkeypatch.setenv("NOTEBOOK_SIZE", "tiny")
  # The kernel inherits this environment: make the checkout importable even
  # when balanced_optax is not installed.
  pythonpath = os.environ.get("PYTHONPATH")
  monkeypatch.setenv(
    "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), pythonpath]))
  )
  notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
  client = nbclient.NotebookClient(
    notebook,
    timeout=300,
    kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  )
  client.execute()  # raises CellExecutionError on the first failing cell
  assert (tmp_path / f"{name}.png").stat().st_size > 0
  check(json.loads((tmp_path / f"{name}_results.json").read_text()))
