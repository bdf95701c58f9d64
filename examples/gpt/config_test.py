"""The GPT config's checks: each bad field fails, naming its range, before
anything is built or written."""

import dataclasses
import gzip
import re

import pytest

from examples.common import loop
from examples.common.config import ConfigError, TrainConfig
from examples.gpt import input_pipeline, train
from examples.gpt.configs import default, tiny

# A bad value of each GPT field, and its whole message (tiny: d_model 32).
BAD_FIELDS = [
  ("val_fraction", 0.0, "config.val_fraction must be in (0, 1), got 0.0."),
  ("val_fraction", 1.0, "config.val_fraction must be in (0, 1), got 1.0."),
  ("block_size", 0, "config.block_size must be an integer >= 1, got 0"),
  ("d_model", 0, "config.d_model must be an integer >= 1, got 0"),
  ("num_layers", -1, "config.num_layers must be an integer >= 0, got -1"),
  ("num_heads", 0, "config.num_heads must be an integer >= 1, got 0"),
  ("num_heads", 3, "config.num_heads must divide config.d_model=32, got 3"),
  ("mlp_ratio", 0, "config.mlp_ratio must be an integer >= 1, got 0"),
  ("eval_batches", 0, "config.eval_batches must be an integer >= 1, got 0"),
  ("sample_chars", -1, "config.sample_chars must be an integer >= 0, got -1"),
  (
    "sample_temperature",
    0.0,
    "config.sample_temperature must be in (0, inf), got 0.0.",
  ),
  ("sample_prompt", None, "config.sample_prompt must be a str, got None"),
]
GPT_FIELDS = {f.name for f in dataclasses.fields(default.Config)} - {
  f.name for f in dataclasses.fields(TrainConfig)
}


def test_every_gpt_field_has_a_bad_value():
  assert {field for field, _, _ in BAD_FIELDS} == GPT_FIELDS


@pytest.mark.parametrize(
  "field, value, message", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS]
)
def test_validate_names_the_field_and_its_range(tiny_config, field, value, message):
  config = dataclasses.replace(tiny_config, **{field: value})
  with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
    config.validate()


def test_shipped_configs_and_a_bigram_model_validate(tiny_config):
  default.get_config().validate()  # reads the bundled Shakespeare
  tiny.get_config().validate()
  dataclasses.replace(tiny_config, num_layers=0, sample_chars=0).validate()


def _bad_file(tmp_path, kind: str) -> str:
  path = tmp_path / {"binary": "weights.bin", "gzip": "text.gz"}.get(kind, kind)
  if kind == "binary":
    path.write_bytes(bytes(range(256)) * 100)
  elif kind == "gzip":  # named .gz but not gzipped
    path.write_text("plain text " * 100)
  elif kind == "folder":
    path.mkdir()
  return str(path)


@pytest.mark.parametrize(
  "kind, reason",
  [
    ("binary", "'utf-8' codec can't decode byte 0x80 in position 128"),
    ("gzip", "Not a gzipped file"),
    ("folder", "Is a directory"),
    ("missing", "No such file or directory"),
  ],
)
def test_data_must_be_readable_text(tiny_config, tmp_path, kind, reason):
  path = _bad_file(tmp_path, kind)
  config = dataclasses.replace(tiny_config, data=path)
  expected = (
    "config.data must be '' (the bundled Shakespeare) or a readable UTF-8 text"
    f" file (.gz too), got {path!r}: "
  )
  with pytest.raises(ConfigError, match=f"^{re.escape(expected)}.*{reason}"):
    config.validate()


def test_gzipped_text_is_read(tiny_config, tmp_path):
  text = input_pipeline.read_text(tiny_config.data)
  path = tmp_path / "village.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(text)
  assert input_pipeline.count_chars(str(path)) == len(text)
  dataclasses.replace(tiny_config, data=str(path)).validate()


def test_block_size_must_fit_both_splits(tiny_config):
  text = input_pipeline.read_text(tiny_config.data)
  corpus = input_pipeline.make_corpus(text, tiny_config.val_fraction)
  train_chars, val_chars = len(corpus.train_ids), len(corpus.val_ids)
  assert train_chars + val_chars == len(text) and val_chars < train_chars
  longest = val_chars - 1  # eval_batches needs more than block_size characters
  dataclasses.replace(tiny_config, block_size=longest).validate()
  input_pipeline.eval_batches(
    corpus.val_ids, batch_size=1, block_size=longest, num_batches=1
  )
  config = dataclasses.replace(tiny_config, block_size=longest + 1)
  expected = (
    f"config.block_size must be in [1, {longest}] for config.data="
    f"{tiny_config.data!r}, whose splits at val_fraction=0.1 hold {train_chars}"
    f" train and {val_chars} validation characters, got {longest + 1}"
  )
  with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
    config.validate()


# What a new user tried on the tiny config with num_steps=3: each trained
# with gradient ascent, trained unclipped, failed after the model and the
# checkpoint manager were built, or divided by zero.
USER_RUNS = [
  {"learning_rate": -1.0},
  {"grad_clip_norm": -1.0},
  {"beta": 1.5},
  {"beta": "autox"},
  {"beta": None},
  {"beta": 1},
  {"beta": "auto", "optimizer": "adam"},
  {"num_steps": 0},
  {"batch_size": 0},
  {"block_size": 0},
  {"eval_every": 0},
  {"log_every": 0},
  {"data": "binary"},
]


@pytest.mark.parametrize("fields", USER_RUNS, ids=str)
def test_train_and_evaluate_checks_before_building(
  tiny_config, tmp_path, monkeypatch, fields
):
  def must_not_train(*args, **kwargs):
    raise AssertionError("loop.train ran with a bad config")

  monkeypatch.setattr(loop, "train", must_not_train)
  if fields.get("data") == "binary":
    fields = {"data": _bad_file(tmp_path, "binary")}
  config = dataclasses.replace(tiny_config, **{"num_steps": 3, **fields})
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=rf"^config\.{next(iter(fields))}\b"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


@pytest.mark.slow
def test_command_line_rejects_a_bad_field_in_one_line(tmp_path, run_main):
  """Exit status 1, one line naming the field, no traceback (orbax's
  included), no workdir."""
  workdir = tmp_path / "run"
  out = run_main("--config.num_steps=3", "--config.beta=1.5", f"--workdir={workdir}")
  assert out.returncode == 1
  assert out.stderr == "error: config.beta must be in [0.0, 1.0), got 1.5.\n"
  assert out.stdout == ""
  assert not workdir.exists()
