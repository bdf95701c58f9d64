"""Trains the character-level GPT.

python -m examples.gpt.main                        # configs/default.py, runs/gpt
python -m examples.gpt.main --config=examples/gpt/configs/tiny.py --workdir=/tmp/gpt
python -m examples.gpt.main --config.data=my.txt --config.beta=auto --workdir=runs/mine

``--help`` lists every flag and config field (``examples.common.app``).
"""

from absl import app, flags

from examples.common import app as common_app
from examples.gpt import train
from examples.gpt.configs import default

main = common_app.define_main(train.train_and_evaluate, default, "runs/gpt")
# --help shows the flags of the main module: --config (with every field) and
# --workdir.
flags.adopt_module_key_flags(common_app)

if __name__ == "__main__":
  app.run(main)
