"""Trains the character-level GPT.

python -m examples.gpt.main --config=default --workdir=runs/gpt
python -m examples.gpt.main --config=tiny --data=my.txt --optimizer=adam
"""

from examples.common import cli
from examples.gpt import train
from examples.gpt.configs import default, tiny

CONFIGS = {"default": default.get_config, "tiny": tiny.get_config}


def main(argv=None) -> dict[str, float]:
  return cli.main(argv, CONFIGS, train.train_and_evaluate, "runs/gpt")


if __name__ == "__main__":
  main()
