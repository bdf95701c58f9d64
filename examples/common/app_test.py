"""``--help`` lists every config field with its default and description."""

import dataclasses
import subprocess

import pytest

from examples.common import app
from examples.common.config import TrainConfig
from examples.gpt.configs import default as gpt_default
from examples.vit.configs import default as vit_default

DEFAULTS = {"gpt": gpt_default, "vit": vit_default}


@pytest.mark.parametrize("example", sorted(DEFAULTS))
def test_every_field_has_a_description(example):
  config_class = DEFAULTS[example].Config
  descriptions = app.field_descriptions(config_class)
  fields = [f.name for f in dataclasses.fields(config_class)]
  assert sorted(descriptions) == sorted(fields)
  assert all(len(descriptions[name]) > 10 for name in fields)
  # Continuation lines are joined; an example's entry replaces the shared one.
  assert descriptions["final_lr_fraction"] == (
    "the cosine decays to this fraction of the peak, in [0, 1]."
  )
  shared = app.field_descriptions(TrainConfig)["data"]
  assert shared == "what to train on; each example documents its values."
  assert descriptions["data"] != shared


@pytest.mark.parametrize("example", sorted(DEFAULTS))
def test_config_help_shows_each_default(example):
  config = DEFAULTS[example].get_config()
  lines = app.config_help(config, "configs/default.py").splitlines()
  assert "--config.FIELD=VALUE" in lines[0] and "configs/default.py" in lines[0]
  descriptions = app.field_descriptions(type(config))
  expected = [
    f"--config.{f.name}={getattr(config, f.name)!r}:"
    f" {descriptions[f.name].replace('``', '')}"
    for f in dataclasses.fields(config)
  ]
  assert lines[1:] == expected
  assert "--config.learning_rate=0.002: peak learning rate (>= 0)" in lines[6]


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(DEFAULTS))
def test_help_flag_lists_every_field(example, subprocess_env, python):
  out = subprocess.run(
    [python, "-m", f"examples.{example}.main", "--help"],
    env=subprocess_env(JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
  )
  # absl's --help exits with status 1, after printing the main module's flags.
  assert "--workdir:" in out.stdout, out.stderr[-3000:]
  config = DEFAULTS[example].get_config()
  for field in dataclasses.fields(config):
    assert f"--config.{field.name}=" in out.stdout, field.name
  assert f"--config.num_steps={config.num_steps}:" in out.stdout
