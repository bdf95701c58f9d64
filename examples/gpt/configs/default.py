"""Default GPT config: a 0.8M-parameter character model, ~4 minutes on 2 CPU cores."""

import dataclasses
import zlib

from examples.common import config as config_lib
from examples.gpt import input_pipeline


@dataclasses.dataclass
class Config(config_lib.TrainConfig):
  """GPT fields on top of :class:`TrainConfig`, whose defaults it sets for the GPT.

  Attributes:
    data: a UTF-8 text file, gzipped if it ends in ``.gz`` ("" = the bundled
      Shakespeare).
    val_fraction: the last fraction of the text, held out for validation, in
      (0, 1).
    block_size: context length L in characters (>= 1; each split needs more
      than L characters).
    d_model: model width D (>= 1).
    num_layers: transformer blocks (>= 0; 0 is a bigram model).
    num_heads: attention heads (>= 1; D must divide by it).
    mlp_ratio: MLP hidden width / D (>= 1).
    eval_batches: validation batches per evaluation (>= 1).
    sample_chars: characters sampled at the end of training (>= 0; 0: none).
    sample_temperature: softmax temperature of the sample (> 0).
    sample_prompt: text the sample continues (characters outside the
      vocabulary are dropped).
  """

  num_steps: int = 1500
  learning_rate: float = 2e-3
  weight_decay: float = 0.1
  # 1 - 344.5 / num_steps, snapped (docs/choosing_beta.md: benchmark v2).
  beta: object = "run_length"
  eval_every: int = 250
  checkpoint_every: int = 250

  val_fraction: float = 0.1
  block_size: int = 64
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  eval_batches: int = 16
  sample_chars: int = 500
  sample_temperature: float = 0.8
  sample_prompt: str = "\n"

  def validate(self) -> None:
    """:meth:`TrainConfig.validate`, then the GPT's fields; reads the data
    file through once, to check that it is UTF-8 text with more than
    ``block_size`` characters in each split."""
    super().validate()
    config_lib.check_number(
      "val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True
    )
    config_lib.check_integer("block_size", self.block_size, 1)
    config_lib.check_transformer(self)
    config_lib.check_integer("eval_batches", self.eval_batches, 1)
    config_lib.check_integer("sample_chars", self.sample_chars, 0)
    config_lib.check_number(
      "sample_temperature", self.sample_temperature, 0, low_open=True
    )
    config_lib.check_type("sample_prompt", self.sample_prompt, str)
    self._check_data()

  def _check_data(self) -> None:
    try:
      num_chars = input_pipeline.count_chars(self.data)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as error:
      raise config_lib.ConfigError(
        "config.data must be '' (the bundled Shakespeare) or a readable UTF-8"
        f" text file (.gz too), got {self.data!r}: {error}"
      ) from None
    split = input_pipeline.split_index(num_chars, self.val_fraction)
    longest = min(split, num_chars - split) - 1
    if self.block_size > longest:
      raise config_lib.ConfigError(
        f"config.block_size must be in [1, {longest}] for config.data="
        f"{self.data!r}, whose splits at val_fraction={self.val_fraction} hold"
        f" {split} train and {num_chars - split} validation characters, got"
        f" {self.block_size}"
      )


def get_config() -> Config:
  return Config()
