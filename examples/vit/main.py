"""Trains the ViT classifier.

python -m examples.vit.main                        # configs/default.py, runs/vit
python -m examples.vit.main --config=examples/vit/configs/tiny.py --workdir=/tmp/vit
python -m examples.vit.main --config.optimizer=signum --config.learning_rate=1e-3

Flags: see ``examples.common.app``.
"""

import os

from absl import app

from examples.common import app as common_app
from examples.vit import train

main = common_app.define_main(
  train.train_and_evaluate, os.path.dirname(__file__), "runs/vit"
)

if __name__ == "__main__":
  app.run(main)
