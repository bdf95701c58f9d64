"""Configs from the command line (ml_collections' config_flags), their
checks, and how a run's beta is resolved from its config."""

import dataclasses
import json
import os
import re
import types

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

import balanced_optax
from examples.common import beta as beta_lib
from examples.common import loop
from examples.common import mesh as mesh_lib
from examples.common.config import ConfigError, TrainConfig

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
  assert (config.num_steps, config.d_model, config.beta) == (1500, 128, "run_length")


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
  "value, expected",
  [
    ("0.9", 0.9),
    ("auto", "auto"),
    ("refresh", "refresh"),
    ("run_length", "run_length"),
  ],
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


# A bad value of each shared field (one or more per field), and its whole
# message: the field and its valid range.
BAD_FIELDS = [
  ("seed", -1, "config.seed must be an integer in [0, 9223372036854775807], got -1"),
  ("seed", 1.5, "config.seed must be an integer in [0, 9223372036854775807], got 1.5"),
  ("data", None, "config.data must be a str, got None"),
  ("num_steps", 0, "config.num_steps must be an integer >= 1, got 0"),
  ("batch_size", 0, "config.batch_size must be an integer >= 1, got 0"),
  (
    "optimizer",
    "adamw",
    "config.optimizer must be one of ('balanced_adam', 'adam', 'signum',"
    " 'rmsprop', 'sgd'), got 'adamw'",
  ),
  ("learning_rate", -1.0, "config.learning_rate must be in [0.0, inf), got -1.0."),
  (
    "learning_rate",
    "1e-3",
    "config.learning_rate must be a number in [0.0, inf), got '1e-3' (str).",
  ),
  ("warmup_steps", -1, "config.warmup_steps must be an integer >= 0, got -1"),
  (
    "final_lr_fraction",
    1.5,
    "config.final_lr_fraction must be in [0, 1], got 1.5.",
  ),
  (
    "final_lr_fraction",
    float("nan"),
    "config.final_lr_fraction must be in [0, 1], got nan.",
  ),
  (
    "final_lr_fraction",
    "0.5",
    "config.final_lr_fraction must be a number in [0, 1], got '0.5' (str).",
  ),
  (
    "final_lr_fraction",
    [0.5],
    "config.final_lr_fraction must be a scalar, got shape (1,).",
  ),
  ("beta", 1.5, "config.beta must be in [0.0, 1.0), got 1.5."),
  ("beta", 1, "config.beta must be in [0.0, 1.0), got 1."),  # 1 is beta = 1.0
  ("beta", -0.1, "config.beta must be in [0.0, 1.0), got -0.1."),
  (
    "beta",
    None,
    "config.beta must be a float in [0, 1) or one of"
    " ('auto', 'refresh', 'run_length'), got None",
  ),
  (
    "beta",
    "autox",
    "config.beta must be a float in [0, 1) or one of"
    " ('auto', 'refresh', 'run_length'), got 'autox'",
  ),
  (
    "beta",
    True,
    "config.beta must be a float in [0, 1) or one of"
    " ('auto', 'refresh', 'run_length'), got True",
  ),
  ("pilot_steps", 2, "config.pilot_steps must be an integer >= 3, got 2"),
  (
    "pilot_lags",
    (20,),
    "config.pilot_lags must hold at least two distinct integers in"
    " [1, config.pilot_steps - 1] = [1, 199], got (20,)",
  ),
  (
    "pilot_lags",
    (20, 200),
    "config.pilot_lags must hold at least two distinct integers in"
    " [1, config.pilot_steps - 1] = [1, 199], got (20, 200)",
  ),
  (
    "pilot_lags",
    (0, 20),
    "config.pilot_lags must hold at least two distinct integers in"
    " [1, config.pilot_steps - 1] = [1, 199], got (0, 20)",
  ),
  (
    "pilot_lags",
    "20,50",
    "config.pilot_lags must hold at least two distinct integers in"
    " [1, config.pilot_steps - 1] = [1, 199], got '20,50'",
  ),
  (
    "pilot_num_probes",
    6,
    "config.pilot_num_probes must be a multiple of 4 (the pilot's noise groups)"
    " >= 4, got 6",
  ),
  (
    "pilot_num_probes",
    0,
    "config.pilot_num_probes must be a multiple of 4 (the pilot's noise groups)"
    " >= 4, got 0",
  ),
  (
    "state_dtype",
    "int2",
    "config.state_dtype must be one of ('float32', 'bfloat16', 'int8', 'int4'),"
    " got 'int2'",
  ),
  ("state_min_size", -1, "config.state_min_size must be an integer >= 0, got -1"),
  ("b1", 1.0, "config.b1 must be in [0.0, 1.0), got 1.0."),
  ("b2", -0.5, "config.b2 must be in [0.0, 1.0), got -0.5."),
  ("eps", -1e-8, "config.eps must be in [0.0, inf), got -1e-08."),
  ("momentum", 1.0, "config.momentum must be in [0.0, 1.0), got 1.0."),
  ("weight_decay", -0.1, "config.weight_decay must be in [0.0, inf), got -0.1."),
  (
    "grad_clip_norm",
    -1.0,
    "config.grad_clip_norm must be in [0, inf), got -1.0.",
  ),
  ("log_every", 0, "config.log_every must be an integer >= 1, got 0"),
  ("eval_every", 0, "config.eval_every must be an integer >= 1, got 0"),
  ("checkpoint_every", 0, "config.checkpoint_every must be an integer >= 1, got 0"),
  ("max_checkpoints", 0, "config.max_checkpoints must be an integer >= 1, got 0"),
  (
    "halt_after_steps",
    -1,
    "config.halt_after_steps must be an integer in [0, 1000], got -1",
  ),
  (
    "halt_after_steps",
    1001,
    "config.halt_after_steps must be an integer in [0, 1000], got 1001",
  ),
  ("fsdp", "yes", "config.fsdp must be a bool, got 'yes'"),
  ("progress_bar", 1, "config.progress_bar must be a bool, got 1"),
]


def test_low_bit_state_needs_balanced_adam():
  config = TrainConfig(optimizer="adam", state_dtype="int8")
  with pytest.raises(ConfigError, match=r"^config\.state_dtype='int8' sets balanced"):
    config.validate()
  TrainConfig(optimizer="adam", state_dtype="float32").validate()
  for state_dtype in ("bfloat16", "int8", "int4"):
    TrainConfig(state_dtype=state_dtype).validate()


def test_every_shared_field_has_a_bad_value():
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  assert {field for field, _, _ in BAD_FIELDS} == fields


@pytest.mark.parametrize(
  "field, value, message", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS]
)
def test_validate_names_the_field_and_its_range(field, value, message):
  config = dataclasses.replace(TrainConfig(), **{field: value})
  with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
    config.validate()


@pytest.mark.parametrize(
  "field, argument, value",
  [
    ("learning_rate", "learning_rate", float("inf")),
    ("beta", "beta", 0.99999999),  # below 1, but 1.0 in float32
    ("b1", "beta", 1.5),
    ("b2", "beta", float("nan")),
    ("momentum", "beta", -0.1),
    ("eps", "eps", -1.0),
    ("weight_decay", "weight_decay", "0.1"),
  ],
)
def test_optimizer_fields_get_balanced_optax_checks(field, argument, value):
  """The library's own check and message, with the field's name."""
  with pytest.raises(ValueError) as library:
    balanced_optax.balanced_adamw(**{"learning_rate": 0.0, argument: value})
  with pytest.raises(ConfigError) as ours:
    dataclasses.replace(TrainConfig(), **{field: value}).validate()
  expected = f"config.{field}{str(library.value).removeprefix(argument)}"
  assert str(ours.value) == expected


@pytest.mark.parametrize(
  "fields",
  [
    {},
    {"beta": 0},  # an int: beta = 0.0, sign descent
    {"beta": 0.9999999},  # below 1 in float32 too
    {"beta": "refresh"},
    {"beta": "run_length"},
    {"beta": "auto"},
    {"optimizer": "adam", "beta": 0.5},  # a float beta is ignored by adam
    {"optimizer": "sgd", "beta": "run_length"},  # and so is a closed-form rule
    {"learning_rate": 0.0, "final_lr_fraction": 1.0, "grad_clip_norm": 0.0},
    {"final_lr_fraction": 0.0, "momentum": 0.0, "eps": 0.0, "weight_decay": 0.0},
    {"warmup_steps": 5000},  # longer than num_steps: cut there (make_schedule)
    {"halt_after_steps": 1000, "seed": np.int64(7)},
    {"pilot_steps": 3, "pilot_lags": [1, 2], "pilot_num_probes": 4},
  ],
  ids=str,
)
def test_validate_accepts_the_ends_of_each_range(fields):
  dataclasses.replace(TrainConfig(), **fields).validate()


def test_the_loop_checks_the_shared_fields_first(tmp_path, monkeypatch):
  """For callers of ``loop.train`` that skip ``train_and_evaluate``."""
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"^config\.eval_every must be"):
    loop.train(TrainConfig(eval_every=0), str(workdir), task=None)
  monkeypatch.setattr(mesh_lib, "make_mesh", lambda: types.SimpleNamespace(size=3))
  message = "config.batch_size must be a multiple of the device count 3, got 32"
  with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
    loop.train(TrainConfig(batch_size=32), str(workdir), task=None)
  assert not workdir.exists()


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


@pytest.mark.parametrize(
  "num_steps, expected",
  [
    (12, 0.68377),  # 1 - 344.5/12 < 0: floored at the range's shortest memory
    (1394, 0.68377),  # 0.75290; the midpoint to 0.82217 is 0.75297
    (1395, 0.82217),
    (1500, 0.82217),  # the GPT trainer's default run: 0.7704
    (4409, 0.9),
    (4410, 0.94377),  # 0.92189 > the midpoint 0.921885
    (10_000, 0.96838),  # 0.96555
    (10**9, 0.999),  # capped at the range's longest memory
  ],
)
def test_run_length_rule(tmp_path, num_steps, expected):
  config = TrainConfig(beta="run_length", num_steps=num_steps)
  beta, record = beta_lib.resolve(config, str(tmp_path), _no_pilot, False)
  assert beta == expected
  assert record == {"beta": expected, "beta_run_length/num_steps": num_steps}


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
  skipped_probes=(),
  seconds=1.5,
  noise_share=0.74,
  horizon_ceiling=27.1,
  design_limited=True,
  design_reason="the probe noise term explains 74% of the change",
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
    "beta_selection/noise_share": 0.74,
    "beta_selection/horizon_ceiling": 27.1,
    "beta_selection/intercept_clipped": False,
    "beta_selection/design_limited": True,
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


def test_auto_reuses_a_selection_saved_before_its_limits_were_reported(tmp_path):
  saved = SELECTION.as_dict()
  for field in ("noise_share", "horizon_ceiling", "intercept_clipped"):
    del saved[field]
  del saved["design_limited"], saved["design_reason"]
  (tmp_path / beta_lib.SELECTION_FILE).write_text(json.dumps(saved))
  config = TrainConfig(beta="auto")
  beta, record = beta_lib.resolve(config, str(tmp_path), _no_pilot, True)
  assert beta == 0.9
  # The defaults: nothing unmeasured (None) logged, flags False.
  assert "beta_selection/noise_share" not in record
  assert record["beta_selection/design_limited"] is False
  assert record["beta_selection/noise"] == 0.18


def test_auto_refuses_checkpoints_made_with_another_beta(tmp_path):
  with pytest.raises(ValueError, match="trained with another beta"):
    beta_lib.resolve(TrainConfig(beta="auto"), str(tmp_path), _no_pilot, True)
