"""Trains the ViT classifier.

python -m examples.vit.main                        # configs/default.py, runs/vit
python -m examples.vit.main --config=examples/vit/configs/tiny.py --workdir=/tmp/vit
python -m examples.vit.main --config.optimizer=signum --config.learning_rate=1e-3

``--help`` lists every flag and config field (``examples.common.app``).
"""

from absl import app, flags

from examples.common import app as common_app
from examples.vit import train
from examples.vit.configs import default

main = common_app.define_main(train.train_and_evaluate, default, "runs/vit")
# --help shows the flags of the main module: --config (with every field) and
# --workdir.
flags.adopt_module_key_flags(common_app)

if __name__ == "__main__":
  app.run(main)
