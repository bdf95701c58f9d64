"""Trains the ViT classifier.

python -m examples.vit.main --config=default --workdir=runs/vit
python -m examples.vit.main --config=tiny --optimizer=signum --learning_rate=1e-3
"""

from examples.common import cli
from examples.vit import train
from examples.vit.configs import default, tiny

CONFIGS = {"default": default.get_config, "tiny": tiny.get_config}


def main(argv=None) -> dict[str, float]:
  return cli.main(argv, CONFIGS, train.train_and_evaluate, "runs/vit")


if __name__ == "__main__":
  main()
