"""``metrics.jsonl`` (one JSON object per log/eval step) and loss curves.

On resume the history is cut back to the restored step: lines written after
the checkpoint (and a half-written last line from a killed process) are
dropped, so a resumed run's file equals an uninterrupted run's. A run that
starts at step 0 starts a new file.
"""

import json
import math
import os
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "loss_curves.png"
# Throughputs end with TIMING_SUFFIX, durations with "_seconds"; everything
# else is a function of the config and the step, identical across restarts.
TIMING_SUFFIX = "_per_sec"
WALL_CLOCK_SUFFIXES = (TIMING_SUFFIX, "_seconds")


def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The records with wall-clock metrics removed, to compare runs."""
  return [
    {k: v for k, v in r.items() if not k.endswith(WALL_CLOCK_SUFFIXES)} for r in history
  ]


def read_history(path: str, max_step: int | None = None) -> list[dict[str, Any]]:
  """Records of ``path`` with ``step <= max_step``; unparsable lines dropped."""
  if not os.path.exists(path):
    return []
  history = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a crash
      if max_step is None or record["step"] <= max_step:
        history.append(record)
  return history


def plot_curves(history: list[dict[str, Any]], path: str) -> None:
  """Plots every ``*_loss`` series (and ``eval_accuracy``) against the step."""
  # Imported here: matplotlib is a third of the trainer's start-up time. The
  # Agg canvas draws without a display and without pyplot's global state.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 4))
  FigureCanvasAgg(fig)
  series = sorted({k for r in history for k in r if k.endswith("_loss")})
  panels = [series] + (
    [["eval_accuracy"]] if any("eval_accuracy" in r for r in history) else []
  )
  for i, keys in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    for key in keys:
      points = [
        (r["step"], r[key]) for r in history if key in r and math.isfinite(r[key])
      ]
      if points:
        ax.plot(
          *zip(*points, strict=True),
          label=key,
          marker="." if key != "train_loss" else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy" if keys == ["eval_accuracy"] else "loss")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


class MetricsWriter:
  """Appends records to ``workdir/metrics.jsonl``; plots them on ``close``.

  Args:
    workdir: the run's directory.
    resume_step: the step the run restarts from; later records are dropped
      (all of them for 0: a fresh run).
    enabled: False on all processes but the first of a multi-process run.
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self._workdir = workdir
    self._enabled = enabled
    path = os.path.join(workdir, METRICS_FILE)
    self.history = read_history(path, max_step=resume_step) if resume_step else []
    self._file = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in self.history)
      os.replace(tmp, path)  # atomic: the old file or the new, never half
      self._file = open(path, "a")

  def write(self, record: dict[str, Any]) -> None:
    record = {k: (int(v) if k == "step" else float(v)) for k, v in record.items()}
    self.history.append(record)
    if self._file:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()

  def latest(self) -> dict[str, Any]:
    """The most recent value of every metric (the run's final numbers)."""
    merged = {}
    for record in self.history:
      merged.update(record)
    return merged

  def close(self) -> None:
    if self._file:
      self._file.close()
      self._file = None
      if self.history:
        plot_curves(self.history, os.path.join(self._workdir, CURVES_FILE))
