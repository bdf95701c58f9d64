"""Configs from the command line (ml_collections' config_flags), and how a
run's beta is resolved from its config."""

import dataclasses
import json
import os

import pytest
from absl import flags
from ml_collections import config_flags

import balanced_optax
from examples.common import beta as beta_lib
from examples.common.config import TrainConfig

EXAMPLES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*args: str):
  """The config that ``main.py`` would build from ``args``, parsed on a
  private flag registry (the trainers' ``main`` modules use absl's global one)."""
  argv = ["main", *args]
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file(
    "config",
    os.path.join(EXAMPLES, "gpt", "configs", "default.py"),
    flag_values=flag_values,
    sys_argv=argv,
  )
  flag_values(argv)
  return config.value


def test_default_config_file_without_flags():
  config = parse()
  assert (config.num_steps, config.d_model, config.beta) == (1500, 128, 0.95)


@pytest.mark.parametrize("example", ["gpt", "vit"])
def test_overrides_parse_each_field_type(example):
  config = parse(
    f"--config={EXAMPLES}/{example}/configs/tiny.py",
    "--config.learning_rate=3e-3",
    "--config.optimizer=adam",
    "--config.num_steps=7",
    "--config.fsdp=false",
    "--config.pilot_lags=(5, 10)",
  )
  assert config.learning_rate == 3e-3 and isinstance(config.learning_rate, float)
  assert (config.optimizer, config.num_steps, config.fsdp) == ("adam", 7, False)
  assert config.pilot_lags == (5, 10)
  assert config.d_model == 32  # the tiny config's, not the default's


@pytest.mark.parametrize(
  "value, expected", [("0.9", 0.9), ("auto", "auto"), ("refresh", "refresh")]
)
def test_beta_is_a_number_or_a_rule(value, expected):
  beta = parse(f"--config.beta={value}").beta
  assert beta == expected and type(beta) is type(expected)


@pytest.mark.parametrize(
  "arg, error",
  [
    ("--config.widht=3", KeyError),  # names the field and the config class
    ("--config.num_steps=3.5", flags.IllegalFlagValueError),
    ("--config.fsdp=maybe", flags.IllegalFlagValueError),
  ],
)
def test_bad_overrides_are_rejected(arg, error):
  with pytest.raises(error):
    parse(arg)


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"beta": "best"}, "beta must be a float in"),
    ({"beta": [0.9]}, "beta must be a float in"),
    ({"beta": "auto", "optimizer": "adam"}, "does not use beta"),
  ],
)
def test_check_beta_rejects(fields, message):
  with pytest.raises(ValueError, match=message):
    beta_lib.check_beta(dataclasses.replace(TrainConfig(), **fields))


def _no_pilot():
  raise AssertionError("the pilot must not run")


def test_float_and_refresh_need_no_pilot(tmp_path):
  config = TrainConfig(beta=0.9)
  assert beta_lib.resolve(config, str(tmp_path), _no_pilot, False) == (0.9, {})
  for num_steps in (200, 20_000):
    config = TrainConfig(beta="refresh", num_steps=num_steps)
    beta, record = beta_lib.resolve(config, str(tmp_path), _no_pilot, False)
    expected = balanced_optax.beta_from_refresh(
      t_es=num_steps, grid=balanced_optax.BETA_GRID
    )
    assert beta == expected and record == {
      "beta": expected,
      "beta_refresh/t_es": num_steps,
    }
  # [FH26b]'s published selection for T_ES = 20000.
  assert beta == pytest.approx(0.94377, abs=1e-5)


SELECTION = balanced_optax.BetaSelection(
  beta=0.9,
  beta_continuous=0.91,
  noise=0.18,
  change=4e-5,
  lag_intercept=1e-5,
  lag_slope=0.3,
  lags=(5, 10),
  lag_changes=(0.02, 0.004),
  horizon=11.1,
  pilot_steps=20,
  pilot_beta=0.95,
  num_probes=8,
  gradient_evaluations=44,
  seconds=1.5,
)


def test_auto_runs_the_pilot_once_and_saves_its_choice(tmp_path, capsys):
  config = TrainConfig(beta="auto")
  calls = []
  pilot = lambda: calls.append(1) or SELECTION
  beta, record = beta_lib.resolve(config, str(tmp_path), pilot, False)
  assert beta == 0.9 and calls == [1]
  assert record == {
    "beta": 0.9,
    "beta_selection/beta_continuous": 0.91,
    "beta_selection/noise": 0.18,
    "beta_selection/change": 4e-5,
    "beta_selection/lag_intercept": 1e-5,
    "beta_selection/lag_slope": 0.3,
    "beta_selection/horizon": 11.1,
    "beta_selection/pilot_steps": 20,
    "beta_selection/gradient_evaluations": 44,
    "beta_selection/pilot_seconds": 1.5,
  }
  saved = json.loads((tmp_path / beta_lib.SELECTION_FILE).read_text())
  assert saved == SELECTION.as_dict()
  assert "early memory selection chose beta=0.90000" in capsys.readouterr().out

  # A restart (before or after a checkpoint) reuses the saved choice.
  for resuming in (False, True):
    assert beta_lib.resolve(config, str(tmp_path), _no_pilot, resuming) == (
      beta,
      record,
    )
    assert "not re-run" in capsys.readouterr().out


def test_auto_refuses_checkpoints_made_with_another_beta(tmp_path):
  with pytest.raises(ValueError, match="trained with another beta"):
    beta_lib.resolve(TrainConfig(beta="auto"), str(tmp_path), _no_pilot, True)
