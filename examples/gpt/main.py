"""Trains the character-level GPT.

python -m examples.gpt.main                        # configs/default.py, runs/gpt
python -m examples.gpt.main --config=examples/gpt/configs/tiny.py --workdir=/tmp/gpt
python -m examples.gpt.main --config.data=my.txt --config.beta=auto --workdir=runs/mine

``--config`` is a config file (``get_config()`` returns the config
dataclass); every field can be overridden with ``--config.FIELD=VALUE``.
"""

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from examples.gpt import train

_WORKDIR = flags.DEFINE_string(
  "workdir", "runs/gpt", "Checkpoints and metrics go here; a rerun resumes."
)
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(__file__), "configs", "default.py"),
  "Config file; override its fields with --config.FIELD=VALUE.",
)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Libraries raise absl's level to INFO (orbax logs every save);
    # --verbosity=0 brings their messages back.
    logging.set_verbosity(logging.WARNING)
  metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:  # one line per run, also when multi-process
    print(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
