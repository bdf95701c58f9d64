"""Config overrides from the command line."""

import dataclasses

import pytest

from examples.common import cli
from examples.common.config import TrainConfig, override


@dataclasses.dataclass
class _Config(TrainConfig):
  width: int = 8
  prompt: str = "\n"
  limit: float | None = None


def test_override_parses_each_field_type():
  config = override(
    _Config(),
    {
      "learning_rate": "3e-3",
      "optimizer": "adam",
      "width": "16",
      "fsdp": "false",
      "limit": "none",
      "prompt": "To be",
    },
  )
  assert config.learning_rate == 3e-3 and isinstance(config.learning_rate, float)
  assert (config.optimizer, config.width, config.fsdp) == ("adam", 16, False)
  assert config.limit is None and config.prompt == "To be"
  assert override(_Config(), {"limit": "0.5"}).limit == 0.5


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"widht": "3"}, "unknown config fields"),
    ({"width": "3.5"}, "--width=3.5"),
    ({"fsdp": "maybe"}, "expected a boolean"),
  ],
)
def test_override_rejects_bad_input(overrides, message):
  with pytest.raises(ValueError, match=message):
    override(_Config(), overrides)


def test_command_line_picks_config_workdir_and_overrides():
  configs = {"default": _Config, "tiny": lambda: _Config(width=2)}
  config, workdir = cli.parse_args(
    ["--config=tiny", "--workdir=/tmp/x", "--num_steps=7", "--learning-rate=0.5"],
    configs,
    "runs/default",
  )
  assert (config.width, config.num_steps, config.learning_rate) == (2, 7, 0.5)
  assert workdir == "/tmp/x"
  config, workdir = cli.parse_args([], configs, "runs/default")
  assert config == _Config() and workdir == "runs/default"
  with pytest.raises(SystemExit):
    cli.parse_args(["--nosuchfield=1"], configs, "runs/default")
