r"""Training quality: best validation loss per optimizer on the tiny GPT.

The comparison of [OG25] at a size a laptop CPU runs in minutes: the
character-level GPT of ``examples/gpt`` on its bundled corpus, trained for the
same number of steps with the same warmup + cosine schedule, clipping and
weight decay, by each optimizer of the comparison set:

  ========================  ===============================================
  ``balanced_adam``         ``balanced_optax.balanced_adamw``, beta = 0.95
  ``balanced_adam_0.9``     the same with beta = 0.9 (beyond the paper's set)
  ``balanced_adam_0.99``    the same with beta = 0.99 (beyond the paper's set)
  ``adam``                  ``optax.adamw``, (b1, b2) = (0.9, 0.999)
  ``signum``                sign of an EMA of the gradient (memory 0.9)
  ``rmsprop``               ``g / (sqrt(EMA_0.999(g^2)) + eps)``
  ``sgd``                   heavy-ball momentum 0.9
  ========================  ===============================================

Each optimizer gets a four-point learning-rate sweep (``CONTENDERS``, or one
grid for all with ``--lrs``); its score is the lowest validation loss
(nats/char) any of its runs reached. The script prints
the grid and the best per optimizer, and writes a JSON and a plot (left: best
validation loss against learning rate; right: the validation curves of each
optimizer's best run).

Usage, from the repository root::

  python -m benchmarks.quality                 # the full sweep (minutes)
  python -m benchmarks.quality --quick         # a smoke run (seconds)

References:
  Orvieto & Gower, `In Search of Adam's Secret Sauce
  <https://arxiv.org/abs/2505.21829>`_, 2025.

  Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2
  <https://arxiv.org/abs/2601.21739>`_, 2026.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks import machine, workloads
from examples.gpt.configs import tiny


@dataclasses.dataclass(frozen=True)
class Contender:
  """One optimizer of the comparison.

  Attributes:
    optimizer: ``config.optimizer`` of the trainer.
    fields: its memories, as config fields.
    learning_rates: the sweep. Adaptive methods move each weight by about lr
      per step; SGD's step is lr times the (clipped) gradient, so its scale
      differs.
  """

  optimizer: str
  fields: dict[str, float]
  learning_rates: tuple[float, ...]


_ADAPTIVE_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
CONTENDERS = {
  "balanced_adam": Contender("balanced_adam", {"beta": 0.95}, _ADAPTIVE_LRS),
  # Beyond the paper's set: how much the one memory matters here.
  "balanced_adam_0.9": Contender("balanced_adam", {"beta": 0.9}, _ADAPTIVE_LRS),
  "balanced_adam_0.99": Contender("balanced_adam", {"beta": 0.99}, _ADAPTIVE_LRS),
  "adam": Contender("adam", {"b1": 0.9, "b2": 0.999}, _ADAPTIVE_LRS),
  "signum": Contender("signum", {"b1": 0.9}, _ADAPTIVE_LRS),
  "rmsprop": Contender("rmsprop", {"b2": 0.999}, (1e-4, 3e-4, 1e-3, 3e-3)),
  "sgd": Contender("sgd", {"momentum": 0.9}, (0.01, 0.03, 0.1, 0.3)),
}


def make_config(name: str, learning_rate: float, num_steps: int, eval_every: int):
  """The tiny GPT config, trained ``num_steps`` steps by contender ``name``."""
  contender = CONTENDERS[name]
  return dataclasses.replace(
    tiny.get_config(),
    optimizer=contender.optimizer,
    learning_rate=learning_rate,
    num_steps=num_steps,
    warmup_steps=max(1, num_steps // 20),
    eval_every=eval_every,
    log_every=eval_every,
    checkpoint_every=num_steps,  # one checkpoint, at the end
    sample_chars=0,
    progress_bar=False,
    **contender.fields,
  )


def run_one(config, workdir: str) -> dict[str, Any]:
  """Trains from scratch in ``workdir``; returns the validation curve."""
  start = time.perf_counter()
  curve = [(int(s), loss) for s, loss in workloads.train_gpt(config, workdir).tolist()]
  seconds = time.perf_counter() - start
  finite = [loss for _, loss in curve if math.isfinite(loss)]
  return {
    "learning_rate": config.learning_rate,
    "val_curve": curve,
    "best_val_loss": min(finite) if finite else math.inf,
    "final_val_loss": curve[-1][1] if curve else math.inf,
    "seconds": seconds,
  }


def best_runs(grid: dict[str, list[dict]]) -> dict[str, dict]:
  """Each optimizer's run with the lowest best validation loss."""
  return {
    name: min(runs, key=lambda r: r["best_val_loss"]) for name, runs in grid.items()
  }


def format_report(report: dict[str, Any]) -> str:
  """The sweep grid and the ranking, as text."""
  grid, config = report["grid"], report["config"]
  lines = [
    f"tiny GPT, {config['num_steps']} steps each, batch {config['batch_size']} x "
    f"{config['block_size']} chars; best validation loss (nats/char) per run",
  ]
  for name, runs in grid.items():
    cells = ", ".join(
      f"lr {r['learning_rate']:g}: {r['best_val_loss']:.4f}" for r in runs
    )
    lines.append(f"  {name:<20} {cells}")
  lines += ["", "best per optimizer (lower is better)"]
  ranked = sorted(report["best"].items(), key=lambda kv: kv[1]["best_val_loss"])
  for name, r in ranked:
    lrs = [run["learning_rate"] for run in grid[name]]
    edge = len(lrs) > 1 and r["learning_rate"] in (min(lrs), max(lrs))
    note = "  (best lr at the edge of the grid)" if edge else ""
    lines.append(
      f"  {name:<20} {r['best_val_loss']:.4f}  at lr {r['learning_rate']:g}{note}"
    )
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Left: best validation loss against learning rate; right: best curves."""
  fig = Figure(figsize=(10, 4))
  FigureCanvasAgg(fig)
  sweep, curves = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  for name, runs in report["grid"].items():
    points = [(r["learning_rate"], r["best_val_loss"]) for r in runs]
    points = [(lr, loss) for lr, loss in points if math.isfinite(loss)]
    if points:
      sweep.plot(*zip(*points, strict=True), marker="o", label=name)
    best = report["best"][name]
    if best["val_curve"]:
      curves.plot(
        *zip(*best["val_curve"], strict=True),
        label=f"{name} (lr {best['learning_rate']:g})",
      )
  sweep.set_xscale("log")
  sweep.set_xlabel("peak learning rate")
  sweep.set_ylabel("best validation loss (nats/char)")
  curves.set_xlabel("step")
  curves.set_ylabel("validation loss (nats/char)")
  for ax in (sweep, curves):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=None, help="steps per run (800)")
  parser.add_argument("--evals", type=int, default=None, help="evaluations per run (8)")
  parser.add_argument(
    "--optimizers", default=",".join(CONTENDERS), help="comma-separated"
  )
  parser.add_argument(
    "--lrs",
    default=None,
    help="one grid for every optimizer, e.g. 1e-3,3e-3 (default: per optimizer)",
  )
  parser.add_argument("--workdir", default=None, help="where runs train (temporary)")
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--plot", default=None, help="PNG plot file")
  parser.add_argument(
    "--quick", action="store_true", help="10 steps, one lr per optimizer: a smoke run"
  )
  args = parser.parse_args(argv)
  args.steps = args.steps or (10 if args.quick else 800)
  args.evals = args.evals or (1 if args.quick else 8)
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the sweep, prints the tables, writes the JSON and the plot."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  names = args.optimizers.split(",")
  unknown = set(names) - set(CONTENDERS)
  if unknown:
    raise SystemExit(f"unknown optimizers {sorted(unknown)}")
  if args.lrs:
    grids = {name: tuple(float(x) for x in args.lrs.split(",")) for name in names}
  elif args.quick:
    grids = {name: CONTENDERS[name].learning_rates[2:3] for name in names}
  else:
    grids = {name: CONTENDERS[name].learning_rates for name in names}
  eval_every = max(1, args.steps // args.evals)
  device = machine.describe()
  suffix = f"{device['platform']}{'_quick' if args.quick else ''}"
  out = args.out or os.path.join("benchmarks", "results", f"quality_{suffix}.json")
  plot_path = args.plot or os.path.splitext(out)[0] + ".png"
  base = make_config(names[0], 1.0, args.steps, eval_every)
  report = {
    "device": device,
    "config": {
      "num_steps": args.steps,
      "eval_every": eval_every,
      "batch_size": base.batch_size,
      "block_size": base.block_size,
      "d_model": base.d_model,
      "num_layers": base.num_layers,
      "weight_decay": base.weight_decay,
      "grad_clip_norm": base.grad_clip_norm,
      "contenders": {name: dataclasses.asdict(CONTENDERS[name]) for name in names},
    },
    "grid": {},
  }
  workdir = args.workdir or tempfile.mkdtemp(prefix="quality_")
  started = time.perf_counter()
  try:
    for name in names:
      report["grid"][name] = []
      for lr in grids[name]:
        config = make_config(name, lr, args.steps, eval_every)
        run = run_one(config, os.path.join(workdir, f"{name}_lr{lr:g}"))
        print(
          f"{name} lr {lr:g}: best val loss {run['best_val_loss']:.4f} "
          f"({run['seconds']:.0f} s)",
          flush=True,
        )
        report["grid"][name].append(run)
  finally:
    if args.workdir is None:
      shutil.rmtree(workdir, ignore_errors=True)
  report["wall_s"] = time.perf_counter() - started
  report["best"] = best_runs(report["grid"])
  print(format_report(report))
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  plot(report, plot_path)
  print(f"wrote {out} and {plot_path}")
  return report


if __name__ == "__main__":
  main()
