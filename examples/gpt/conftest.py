"""Fixtures for the GPT tests: an unseen corpus and one reference run.

The reference is the tiny config trained uninterrupted for its 200 steps on
a text that is not Shakespeare; the resume, multi-device and crash tests
compare their runs to its ``metrics.jsonl`` and checkpoints.
"""

import dataclasses
import os
import subprocess

import numpy as np
import pytest

from examples.common.metrics import METRICS_FILE, read_history
from examples.gpt import train
from examples.gpt.configs import tiny

TINY_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "tiny.py")

_SUBJECTS = (
  "the farmer",
  "a young girl",
  "my old friend",
  "the captain",
  "her brother",
  "the tired horse",
  "a stranger",
  "the teacher",
  "our neighbour",
  "the miller",
)
_VERBS = (
  "walked along",
  "looked at",
  "carried",
  "remembered",
  "painted",
  "followed",
  "forgot",
  "mended",
  "counted",
  "watched",
)
_OBJECTS = (
  "the narrow road",
  "a basket of apples",
  "the broken fence",
  "the grey sky",
  "an old letter",
  "the wooden bridge",
  "a small boat",
  "the quiet garden",
  "the long winter",
  "a silver coin",
)
_ENDINGS = (
  "in the morning",
  "before the rain came",
  "without a word",
  "near the river",
  "after supper",
  "with great care",
  "for the last time",
  "while the bells rang",
)


def english_like_text(num_sentences: int = 600, seed: int = 0) -> str:
  """Simple English sentences from a small grammar, in paragraphs."""
  rng = np.random.default_rng(seed)
  pick = lambda words: words[rng.integers(len(words))]
  paragraphs, sentences = [], []
  for _ in range(num_sentences):
    sentence = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_ENDINGS)}"
    sentences.append(sentence[0].upper() + sentence[1:] + pick((".", ".", "!", "?")))
    if rng.random() < 0.2:
      paragraphs.append(" ".join(sentences))
      sentences = []
  paragraphs.append(" ".join(sentences))
  return "\n\n".join(paragraphs) + "\n"


@pytest.fixture(scope="session")
def unseen_text_path(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("corpus") / "village.txt"
  path.write_text(english_like_text())
  return str(path)


@pytest.fixture(scope="session")
def tiny_config(unseen_text_path):
  """The tiny config on the unseen corpus, without a progress bar."""
  return dataclasses.replace(
    tiny.get_config(), data=unseen_text_path, progress_bar=False
  )


@pytest.fixture(scope="session")
def reference_run(tiny_config, tmp_path_factory):
  """``(workdir, final_metrics, history)`` of the uninterrupted tiny run."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  metrics = train.train_and_evaluate(tiny_config, workdir)
  history = read_history(f"{workdir}/{METRICS_FILE}")
  return workdir, metrics, history


@pytest.fixture(scope="session")
def run_main(subprocess_env, python):
  """Returns ``run(*flags)``: ``python -m examples.gpt.main
  --config=configs/tiny.py *flags`` on the CPU, as a finished
  ``subprocess.CompletedProcess`` with its output as text."""

  def run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
      [python, "-m", "examples.gpt.main", f"--config={TINY_CONFIG}", *flags],
      env=subprocess_env(JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=120,
    )

  return run
