"""Trains the character-level GPT.

python -m examples.gpt.main                        # configs/default.py, runs/gpt
python -m examples.gpt.main --config=examples/gpt/configs/tiny.py --workdir=/tmp/gpt
python -m examples.gpt.main --config.data=my.txt --config.beta=auto --workdir=runs/mine

Flags: see ``examples.common.app``.
"""

import os

from absl import app

from examples.common import app as common_app
from examples.gpt import train

main = common_app.define_main(
  train.train_and_evaluate, os.path.dirname(__file__), "runs/gpt"
)

if __name__ == "__main__":
  app.run(main)
