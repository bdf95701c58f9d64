"""The command line both trainers share.

``python -m examples.gpt.main --config=tiny --workdir=DIR --num_steps=200
--learning_rate=3e-3 --optimizer=adam``: ``--config`` picks a module from the
example's ``configs/``, ``--workdir`` is where checkpoints and metrics go,
and every other ``--field=value`` overrides a field of the config.
"""

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from examples.common import config as config_lib


def parse_args(
  argv: Sequence[str], configs: Mapping[str, Callable[[], Any]], default_workdir: str
) -> tuple[Any, str]:
  """Returns ``(config, workdir)`` from command-line arguments.

  Args:
    argv: arguments without the program name.
    configs: config name -> function returning the config dataclass.
    default_workdir: used when ``--workdir`` is not given.

  Returns:
    The overridden config and the work directory.
  """
  parser = argparse.ArgumentParser(
    description="Any other --field=value overrides a config field."
  )
  parser.add_argument("--config", default="default", choices=sorted(configs))
  parser.add_argument("--workdir", default=default_workdir)
  args, rest = parser.parse_known_args(argv)
  overrides = {}
  for arg in rest:
    name, sep, value = arg.removeprefix("--").partition("=")
    if not arg.startswith("--") or not sep:
      parser.error(f"expected --field=value, got {arg!r}")
    overrides[name.replace("-", "_")] = value
  try:
    config = config_lib.override(configs[args.config](), overrides)
  except ValueError as e:
    parser.error(str(e))
  return config, args.workdir


def main(
  argv: Sequence[str] | None,
  configs: Mapping[str, Callable[[], Any]],
  train_and_evaluate: Callable[[Any, str], dict[str, float]],
  default_workdir: str,
) -> dict[str, float]:
  """Parses ``argv`` (None: ``sys.argv[1:]``), trains, prints and returns the
  final metrics."""
  argv = sys.argv[1:] if argv is None else argv
  config, workdir = parse_args(argv, configs, default_workdir)
  metrics = train_and_evaluate(config, workdir)
  if jax.process_index() == 0:  # one line per run, also when multi-process
    print(json.dumps(metrics, sort_keys=True))
  return metrics
