"""Default ViT config: digits, under a minute on 2 CPU cores."""

import dataclasses

from examples.common.config import TrainConfig


@dataclasses.dataclass
class Config(TrainConfig):
  """ViT fields on top of :class:`TrainConfig`.

  Attributes:
    data: ``digits`` (scikit-learn, offline) or ``cifar10`` (downloads).
    patch_size: side P of the square patches.
    d_model: model width D.
    num_layers: transformer blocks.
    num_heads: attention heads (D must divide by it).
    mlp_ratio: MLP hidden width / D.
  """

  data: str = "digits"
  patch_size: int = 2
  d_model: int = 48
  num_layers: int = 4
  num_heads: int = 3
  mlp_ratio: int = 2


def get_config() -> Config:
  return Config(
    num_steps=1000,
    batch_size=64,
    learning_rate=2e-3,
    warmup_steps=50,
    weight_decay=0.3,
    log_every=50,
    eval_every=200,
    checkpoint_every=500,
  )
