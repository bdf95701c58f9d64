"""Default GPT config: a 0.8M-parameter character model, ~4 minutes on 2 CPU cores."""

import dataclasses

from examples.common.config import TrainConfig


@dataclasses.dataclass
class Config(TrainConfig):
  """GPT fields on top of :class:`TrainConfig`.

  Attributes:
    data: a UTF-8 text file ("" = the bundled Shakespeare).
    val_fraction: the last fraction of the text, held out for validation.
    block_size: context length L in characters.
    d_model: model width D.
    num_layers: transformer blocks.
    num_heads: attention heads (D must divide by it).
    mlp_ratio: MLP hidden width / D.
    eval_batches: validation batches per evaluation.
    sample_chars: characters sampled at the end of training.
    sample_temperature: softmax temperature of the sample.
    sample_prompt: text the sample continues.
  """

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


def get_config() -> Config:
  return Config(
    num_steps=1500,
    batch_size=32,
    learning_rate=2e-3,
    warmup_steps=100,
    weight_decay=0.1,
    log_every=50,
    eval_every=250,
    checkpoint_every=250,
  )
