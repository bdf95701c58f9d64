"""The command line both trainers share: absl flags and an ml_collections config.

``python -m examples.<name>.main --config=FILE --config.FIELD=VALUE --workdir=DIR``:
``--config`` is a config file whose ``get_config()`` returns the config
dataclass, every field can be overridden with ``--config.FIELD=VALUE``, and
``--workdir`` is where checkpoints and metrics go (a rerun resumes).
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags


def define_main(
  train_and_evaluate: Callable[[Any, str], dict[str, float]],
  example_dir: str,
  default_workdir: str,
) -> Callable[[Sequence[str]], None]:
  """Defines ``--config`` and ``--workdir`` and returns the ``main`` for ``app.run``.

  Args:
    train_and_evaluate: the example's ``train.train_and_evaluate(config, workdir)``.
    example_dir: the example's folder; its ``configs/default.py`` is the default.
    default_workdir: ``--workdir``'s default.

  Returns:
    ``main(argv)``, which trains and prints the final metrics as one JSON line.
  """
  workdir = flags.DEFINE_string(
    "workdir", default_workdir, "Checkpoints and metrics go here; a rerun resumes."
  )
  config = config_flags.DEFINE_config_file(
    "config",
    os.path.join(example_dir, "configs", "default.py"),
    "Config file; override its fields with --config.FIELD=VALUE.",
  )

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      # Libraries raise absl's level to INFO (orbax logs every save);
      # --verbosity=0 brings their messages back.
      logging.set_verbosity(logging.WARNING)
    metrics = train_and_evaluate(config.value, workdir.value)
    if jax.process_index() == 0:  # one line per run, also when multi-process
      print(json.dumps(metrics, sort_keys=True))

  return main
