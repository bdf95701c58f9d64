"""The command line both trainers share: absl flags and an ml_collections config.

``python -m examples.<name>.main --config=FILE --config.FIELD=VALUE --workdir=DIR``:
``--config`` is a config file whose ``get_config()`` returns the config
dataclass, every field can be overridden with ``--config.FIELD=VALUE``, and
``--workdir`` is where checkpoints and metrics go (a rerun resumes). ``--help``
lists every field with its default and description (the ``Attributes:`` of
the config classes' docstrings). A field outside its range ends the run
before anything is built, with one line naming it and exit status 1.
"""

import dataclasses
import inspect
import json
import os
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from examples.common.config import ConfigError


def field_descriptions(config_class: type) -> dict[str, str]:
  """``field -> description``, from the ``Attributes:`` sections of the
  docstrings of ``config_class`` and its bases (a subclass's entry wins)."""
  descriptions = {}
  for cls in reversed(config_class.__mro__):
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")
    _, _, section = doc.partition("\nAttributes:\n")
    name = None
    for line in section.splitlines():
      if entry := re.fullmatch(r"  (\w+): (.*)", line):
        name = entry[1]
        descriptions[name] = entry[2]
      elif name and line.startswith("    "):
        descriptions[name] += " " + line.strip()
      else:  # the section ends at its first blank or unindented line
        break
  return descriptions


def config_help(config: Any, config_file: str) -> str:
  """``--config``'s help: each field of ``config``, its value there and what
  it is."""
  descriptions = field_descriptions(type(config))
  lines = [
    "Config file whose get_config() returns the run's config. Any field can be"
    f" set with --config.FIELD=VALUE; the fields, as {config_file} sets them:"
  ]
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    description = descriptions.get(field.name, "").replace("``", "")
    lines.append(f"--config.{field.name}={value!r}: {description}")
  return "\n".join(lines)


def define_main(
  train_and_evaluate: Callable[[Any, str], dict[str, float]],
  default_config: types.ModuleType,
  default_workdir: str,
) -> Callable[[Sequence[str]], None]:
  """Defines ``--config`` and ``--workdir`` and returns the ``main`` for ``app.run``.

  Args:
    train_and_evaluate: the example's ``train.train_and_evaluate(config, workdir)``.
    default_config: the example's ``configs.default`` module, ``--config``'s
      default; its fields are listed in ``--config``'s help.
    default_workdir: ``--workdir``'s default.

  Returns:
    ``main(argv)``, which trains and prints the final metrics as one JSON
    line, or exits with status 1 and a one-line message for a bad field.
  """
  workdir = flags.DEFINE_string(
    "workdir", default_workdir, "Checkpoints and metrics go here; a rerun resumes."
  )
  config_file = default_config.__file__
  config = config_flags.DEFINE_config_file(
    "config",
    config_file,
    config_help(default_config.get_config(), os.path.relpath(config_file)),
  )

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      # Libraries raise absl's level to INFO (orbax logs every save);
      # --verbosity=0 brings their messages back.
      logging.set_verbosity(logging.WARNING)
    try:
      metrics = train_and_evaluate(config.value, workdir.value)
    except ConfigError as error:
      # The user's to fix, not a bug to trace; raised before anything is
      # built, so there is nothing to clean up.
      sys.exit(f"error: {error}")
    if jax.process_index() == 0:  # one line per run, also when multi-process
      print(json.dumps(metrics, sort_keys=True))

  return main
