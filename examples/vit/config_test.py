"""The ViT config's checks: each bad field fails, naming its range, before
the data is loaded or anything is built."""

import dataclasses
import importlib.util
import re

import pytest

from examples.common import loop
from examples.common.config import ConfigError, TrainConfig
from examples.vit import input_pipeline, train
from examples.vit.configs import default, tiny

# A bad value of each ViT field, and its whole message (tiny: d_model 32).
BAD_FIELDS = [
  (
    "data",
    "mnist",
    "config.data must be one of ('', 'digits', 'cifar10'), got 'mnist'",
  ),
  (
    "patch_size",
    3,
    "config.patch_size must divide the 8x8 images of config.data='digits':"
    " one of [1, 2, 4, 8], got 3",
  ),
  ("patch_size", 0, "config.patch_size must be an integer >= 1, got 0"),
  ("patch_size", True, "config.patch_size must be an integer >= 1, got True"),
  ("d_model", 0, "config.d_model must be an integer >= 1, got 0"),
  ("num_layers", -1, "config.num_layers must be an integer >= 0, got -1"),
  ("num_heads", 0, "config.num_heads must be an integer >= 1, got 0"),
  ("num_heads", 5, "config.num_heads must divide config.d_model=32, got 5"),
  ("mlp_ratio", 0, "config.mlp_ratio must be an integer >= 1, got 0"),
]
VIT_FIELDS = {f.name for f in dataclasses.fields(default.Config)} - {
  f.name for f in dataclasses.fields(TrainConfig)
}


def test_every_vit_field_has_a_bad_value():
  assert {field for field, _, _ in BAD_FIELDS} == VIT_FIELDS | {"data"}


@pytest.mark.parametrize(
  "field, value, message", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS]
)
def test_validate_names_the_field_and_its_range(field, value, message):
  config = dataclasses.replace(tiny.get_config(), **{field: value})
  with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
    config.validate()


def test_shipped_configs_and_cifar_patches_validate(monkeypatch):
  default.get_config().validate()
  tiny.get_config().validate()
  # CIFAR-10's 32x32 images take 4x4 patches, with datasets installed.
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
  dataclasses.replace(tiny.get_config(), data="cifar10", patch_size=4).validate()


def test_cifar10_needs_datasets(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  config = dataclasses.replace(tiny.get_config(), data="cifar10", patch_size=4)
  message = "config.data='cifar10' needs HuggingFace datasets: pip install datasets"
  with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
    config.validate()


@pytest.mark.parametrize(
  "fields",
  [{"learning_rate": -1.0}, {"beta": 1.5}, {"eval_every": 0}, {"patch_size": 3}],
  ids=str,
)
def test_train_and_evaluate_checks_before_loading(tmp_path, monkeypatch, fields):
  def must_not_run(*args, **kwargs):
    raise AssertionError("ran with a bad config")

  monkeypatch.setattr(input_pipeline, "load", must_not_run)
  monkeypatch.setattr(loop, "train", must_not_run)
  config = dataclasses.replace(tiny.get_config(), num_steps=3, **fields)
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=rf"^config\.{next(iter(fields))}\b"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
