"""The quickstart trains both optimizers to a sensible accuracy on digits."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_quickstart():
  spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(ROOT, "examples", "quickstart.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow  # an end-to-end run: 150 steps of two optimizers
def test_quickstart_trains_both_optimizers(capsys):
  results = _load_quickstart().main(["--steps=150"])
  assert len(results) == 2
  for name, r in results.items():
    assert r["test_accuracy"] > 0.9, (name, r)
    assert np.isfinite(r["train_loss"]) and r["train_loss"] < 0.3, (name, r)
  printed = capsys.readouterr().out
  assert "balanced_adam" in printed and "optax.adam" in printed
