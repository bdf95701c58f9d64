"""Default ViT config: digits, under a minute on 2 CPU cores."""

import dataclasses
import importlib.util

from examples.common import config as config_lib
from examples.vit import input_pipeline


@dataclasses.dataclass
class Config(config_lib.TrainConfig):
  """ViT fields on top of :class:`TrainConfig`, whose defaults it sets for the ViT.

  Attributes:
    data: ``digits`` (scikit-learn, offline) or ``cifar10`` (downloads; needs
      HuggingFace ``datasets``).
    patch_size: side P of the square patches; the image side (8 for digits,
      32 for CIFAR-10) must divide by it.
    d_model: model width D (>= 1).
    num_layers: transformer blocks (>= 0).
    num_heads: attention heads (>= 1; D must divide by it).
    mlp_ratio: MLP hidden width / D (>= 1).
  """

  data: str = "digits"
  batch_size: int = 64
  learning_rate: float = 2e-3
  warmup_steps: int = 50
  # 1 - 344.5 / num_steps, snapped (docs/choosing_beta.md: benchmark v2).
  beta: object = "run_length"
  weight_decay: float = 0.3
  eval_every: int = 200

  patch_size: int = 2
  d_model: int = 48
  num_layers: int = 4
  num_heads: int = 3
  mlp_ratio: int = 2

  def validate(self) -> None:
    """:meth:`TrainConfig.validate`, then the ViT's fields."""
    super().validate()
    config_lib.check_choice("data", self.data, input_pipeline.DATASETS)
    side = input_pipeline.IMAGE_SIDES[self.data or "digits"]
    config_lib.check_integer("patch_size", self.patch_size, 1)
    if side % self.patch_size:
      divisors = [p for p in range(1, side + 1) if side % p == 0]
      raise config_lib.ConfigError(
        f"config.patch_size must divide the {side}x{side} images of"
        f" config.data={self.data!r}: one of {divisors}, got {self.patch_size}"
      )
    config_lib.check_transformer(self)
    if self.data == "cifar10" and importlib.util.find_spec("datasets") is None:
      raise config_lib.ConfigError(
        "config.data='cifar10' needs HuggingFace datasets: pip install datasets"
      )


def get_config() -> Config:
  return Config()
