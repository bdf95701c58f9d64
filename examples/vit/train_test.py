"""End-to-end test of the ViT trainer on the tiny config."""

import dataclasses
import json
import math

import pytest

from examples.vit import train
from examples.vit.configs import tiny

# train_loss at step 20 of the tiny config (the first is ln 10 exactly: the
# head starts at zero).
GOLDEN_STEP_20_LOSS = 1.9818313


@pytest.fixture(scope="module")
def tiny_run(compilation_cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vit")
  config = dataclasses.replace(tiny.get_config(), progress_bar=False)
  final = train.train_and_evaluate(config, str(workdir))
  with open(workdir / "metrics.jsonl") as f:
    return final, {r["step"]: r for r in map(json.loads, f)}


def test_reaches_ninety_percent_on_digits(tiny_run):
  final, _ = tiny_run
  assert final["step"] == 300
  assert final["eval_accuracy"] >= 0.9


def test_golden_losses_and_decrease(tiny_run):
  _, history = tiny_run
  assert history[1]["train_loss"] == pytest.approx(math.log(10), abs=1e-6)
  assert history[20]["train_loss"] == pytest.approx(GOLDEN_STEP_20_LOSS, abs=2e-5)
  assert (
    history[100]["eval_loss"] > history[200]["eval_loss"] > history[300]["eval_loss"]
  )
  assert history[300]["eval_loss"] < 0.5 * math.log(10)
