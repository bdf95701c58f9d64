r"""Choosing beta: [FH26c]'s retrospective protocol, in miniature.

For every workload of a suite (``benchmarks.workloads``: the character GPT at
two batch sizes and two run lengths, the GPT on another text, an MLP on
digits, noisy heterogeneous quadratics), at a fixed seed and recipe:

1. Sweep the selection grid (``1 - beta = 10^(-k/4)``, k = 2..12: the 11
   values 0.68377 .. 0.999) with balanced AdamW, the whole grid in one
   vmapped program; a run's score is its best validation loss.
2. Oracle: the grid beta with the lowest score. Each method's gap is the
   relative gap of its beta's score to the oracle's, ``L(beta) / L* - 1``.
3. Methods: every fixed beta (0.94377 is the grid's "0.95"); the best fixed
   beta in hindsight (the one with the lowest mean gap over the suite); the
   refresh rule of [FH26b], ``beta_from_refresh(T_ES, 1000)`` snapped to the
   grid, with ``T_ES`` read by ``balanced_optax.estimate_effective_horizon``
   from the fixed-0.94377 run's validation history; and the selector,
   ``balanced_optax.select_beta`` with its defaults (the paper's common
   instance: a 200-update pilot at beta 0.95 on the workload's own recipe,
   lags 20/50/100, 16 probes in 4 groups, a 1024-dim sketch).
4. Across the suite: mean / max / CVaR25 (the mean of the worst quarter) of
   each method's gap, the paper's table. On the GPT workloads also the best
   untied (beta1, beta2) AdamW of a small grid, against balanced Adam at the
   selected beta. Seeds: the grid and the selector again at other seeds on
   some workloads, to read the gaps against seed-to-seed noise.

The script prints the table and its targets with verdicts, and
writes ``benchmarks/results/beta_selection[_SIZE].json`` and a PNG. It never
tunes a workload to the selector: the suite and recipes are fixed in
``SUITES`` before anything is measured.

Usage, from the repository root::

  python -m benchmarks.beta_selection                # CPU size (~20 min, 2 cores)
  python -m benchmarks.beta_selection --size=smoke   # seconds, for the tests
  python -m benchmarks.beta_selection --size=large   # longer runs, for a GPU/TPU

References:
  Fernandez-Hernandez et al., Early Memory Selection for Balanced Adam, 2026.

  Fernandez-Hernandez et al., `Refresh-Scaling the Memory of Balanced Adam
  <https://arxiv.org/abs/2605.10119>`_, 2026.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import balanced_optax as bo
from benchmarks import machine, workloads

GRID = workloads.SELECTION_GRID
FIXED_DEFAULT = 0.94377  # the grid's "0.95"
# The untied AdamW grid on the GPT workloads (its diagonal holds 0.95/0.95).
UNTIED = tuple((b1, b2) for b1 in (0.8, 0.9, 0.95) for b2 in (0.95, 0.99, 0.999))
REFERENCE_RUN = 10_000  # pilot cost is reported against a run this long


@dataclasses.dataclass(frozen=True)
class Spec:
  """One workload of a suite: a kind of ``workloads.make_workload`` + fields."""

  name: str
  kind: str
  fields: dict[str, Any]
  seeds: tuple[int, ...] = (0,)


def _suite(
  scale: int, gpt_steps: int, long_steps: int, gpt_seeds: tuple[int, ...] = (0,)
) -> list[Spec]:
  """The suite at a size; ``scale`` widens the GPT, the steps set the lengths.

  The GPT grids dominate the cost, so at the CPU size only the cheap
  workloads are repeated over seeds.
  """
  gpt = dict(d_model=32 * scale, num_layers=2 * scale, num_heads=2 * scale)
  every = max(1, gpt_steps // 20)
  return [
    Spec(
      "gpt_b16",
      "gpt",
      dict(gpt, batch_size=16, num_steps=gpt_steps, eval_every=every),
      gpt_seeds,
    ),
    Spec(
      "gpt_b64", "gpt", dict(gpt, batch_size=64, num_steps=gpt_steps, eval_every=every)
    ),
    Spec(
      "gpt_b16_long",
      "gpt",
      dict(gpt, batch_size=16, num_steps=long_steps, eval_every=long_steps // 20),
    ),
    Spec(
      "gpt_sonnets",
      "gpt_sonnets",
      dict(gpt, batch_size=16, num_steps=gpt_steps, eval_every=every),
    ),
    Spec(
      "mlp_digits",
      "mlp_digits",
      dict(num_steps=2 * gpt_steps, eval_every=2 * every),
      (0, 1, 2),
    ),
    Spec(
      "quadratic_b8",
      "quadratic",
      dict(batch_size=8, num_steps=2 * gpt_steps, eval_every=2 * every),
      (0, 1, 2),
    ),
    Spec(
      "quadratic_b64",
      "quadratic",
      dict(batch_size=64, num_steps=2 * gpt_steps, eval_every=2 * every),
      (0, 1, 2),
    ),
  ]


SUITES = {
  "smoke": [
    Spec("gpt_b16", "gpt", dict(num_layers=1, num_steps=40, eval_every=10)),
    Spec("quadratic_b8", "quadratic", dict(num_steps=40, eval_every=10), (0, 1)),
  ],
  "default": _suite(scale=1, gpt_steps=300, long_steps=900),
  "large": _suite(scale=2, gpt_steps=3000, long_steps=10_000, gpt_seeds=(0, 1, 2)),
}
# The smoke suite's runs are shorter than the paper's pilot; its pilot is cut
# to fit (the protocol, not the numbers, is what the smoke run checks).
PILOT = {
  "smoke": dict(pilot_steps=20, lags=(2, 5, 10)),
  "default": {},
  "large": {},
}


def key(beta: float) -> str:
  """The results' key of a beta: its nearest grid value, to 5 decimals."""
  return f"{min(GRID, key=lambda b: (abs(b - beta), b)):.5f}"


def cvar(gaps: Sequence[float], share: float = 0.25) -> float:
  """Mean of the worst ``ceil(share * n)`` gaps (CVaR at level ``share``)."""
  worst = sorted(gaps, reverse=True)[: max(1, math.ceil(share * len(gaps)))]
  return float(np.mean(worst))


def summarize(gaps: Sequence[float]) -> dict[str, float]:
  """Mean, max and CVaR25 of a method's gaps over the suite."""
  return {
    "mean": float(np.mean(gaps)),
    "max": float(np.max(gaps)),
    "cvar25": cvar(gaps),
  }


def refresh_beta(steps: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
  """``(T_ES, beta)``: [FH26b]'s rule, R = 1000, on the selection grid."""
  finite = np.isfinite(losses)
  t_es = float(bo.estimate_effective_horizon(losses[finite], steps[finite]))
  try:
    beta = float(bo.beta_from_refresh(t_es, refresh=1000, grid=GRID))
  except TypeError:  # a beta_from_refresh without `grid`: snap here
    try:
      beta = float(bo.beta_from_refresh(t_es, refresh=1000))
    except ValueError:  # T_ES <= R: the rule asks for no memory at all
      beta = 0.0
    beta = min(GRID, key=lambda b: (abs(b - beta), b))
  return t_es, min(GRID, key=lambda b: (abs(b - beta), b))


def select(workload: workloads.Workload, seed: int, pilot: dict) -> dict[str, Any]:
  """``balanced_optax.select_beta`` on the workload's own recipe and data."""
  params = workload.init(jax.random.key(seed))
  selection = bo.select_beta(
    lambda beta: workload.optimizer(beta),
    jax.grad(workload.loss),
    lambda step: workload.train_batch(step, seed),
    params,
    seed=seed,
    **pilot,
  )
  return {
    "beta": float(selection.beta),
    "beta_continuous": float(selection.beta_continuous),
    "noise": float(selection.noise),
    "change": float(selection.change),
    "horizon": float(selection.horizon),
    "gradient_evaluations": int(selection.gradient_evaluations),
    "seconds": float(selection.seconds),
  }


def run_workload(spec: Spec, size: str) -> dict[str, Any]:
  """Grid, oracle, refresh rule, selector (and untied AdamW) on one workload."""
  workload = workloads.make_workload(spec.kind, name=spec.name, **spec.fields)
  result: dict[str, Any] = {
    "kind": workload.kind,
    "batch_size": workload.batch_size,
    "num_steps": workload.num_steps,
    "learning_rate": workload.learning_rate,
    "seeds": {},
  }
  for seed in spec.seeds:
    history = workloads.train_grid(workload, GRID, seed=seed)
    best = history.best
    oracle = int(np.argmin(best))
    t_es, rule = refresh_beta(
      history.steps, history.val_loss[GRID.index(FIXED_DEFAULT)]
    )
    chosen = select(workload, seed, PILOT[size])
    score = {key(b): loss for b, loss in zip(GRID, best.tolist(), strict=True)}
    row = {
      "steps": history.steps.tolist(),
      "val_loss": history.val_loss.tolist(),
      "best": best.tolist(),
      "grid_seconds": history.seconds,
      "oracle_beta": GRID[oracle],
      "oracle_loss": float(best[oracle]),
      "gap": {k: float(loss / best[oracle] - 1) for k, loss in score.items()},
      "t_es": t_es,
      "refresh_beta": rule,
      "selection": chosen,
      "selector_beta": float(key(chosen["beta"])),
    }
    row["refresh_gap"] = row["gap"][key(rule)]
    row["selector_gap"] = row["gap"][key(chosen["beta"])]
    if workload.kind == "gpt" and seed == spec.seeds[0]:
      untied = workloads.train_grid(workload, untied=UNTIED, seed=seed)
      k = int(np.argmin(untied.best))
      row["untied"] = {
        "pairs": [list(p) for p in UNTIED],
        "best": untied.best.tolist(),
        "best_pair": list(UNTIED[k]),
        "best_loss": float(untied.best[k]),
        "seconds": untied.seconds,
        "selector_vs_best_untied": score[key(chosen["beta"])] / float(untied.best[k])
        - 1,
      }
    result["seeds"][str(seed)] = row
    print(
      f"{spec.name:<14} seed {seed}: oracle {GRID[oracle]:.5g} "
      f"({best[oracle]:.4f}), selector {chosen['beta']:.5g} "
      f"(+{100 * row['selector_gap']:.2f}%), refresh {rule:.5g} "
      f"(T_ES {t_es:.0f}, +{100 * row['refresh_gap']:.2f}%), "
      f"0.94377 +{100 * row['gap'][key(FIXED_DEFAULT)]:.2f}%  "
      f"[grid {history.seconds:.0f} s, pilot {chosen['seconds']:.0f} s]",
      flush=True,
    )
  spread = np.array([result["seeds"][str(s)]["best"] for s in spec.seeds])
  if len(spec.seeds) > 1:
    relative = np.ptp(spread, axis=0) / spread.mean(axis=0)
    result["seed_spread"] = {
      "relative_range_per_beta": relative.tolist(),
      "median": float(np.median(relative)),
      "max": float(relative.max()),
      "oracle_betas": [result["seeds"][str(s)]["oracle_beta"] for s in spec.seeds],
      "selector_betas": [result["seeds"][str(s)]["selector_beta"] for s in spec.seeds],
    }
  return result


def suite_table(results: dict[str, dict]) -> dict[str, Any]:
  """The paper's table (seed 0 of every workload): mean / max / CVaR25 gaps."""
  rows = {name: r["seeds"][min(r["seeds"], key=int)] for name, r in results.items()}
  fixed = {b: [row["gap"][key(b)] for row in rows.values()] for b in GRID}
  hindsight = min(GRID, key=lambda b: np.mean(fixed[b]))
  table = {
    f"fixed {FIXED_DEFAULT:g}": summarize(fixed[FIXED_DEFAULT]),
    f"best fixed in hindsight ({hindsight:g})": summarize(fixed[hindsight]),
    "refresh rule (R = 1000)": summarize([r["refresh_gap"] for r in rows.values()]),
    "selector": summarize([r["selector_gap"] for r in rows.values()]),
  }
  return {
    "table": table,
    "fixed": {key(b): summarize(g) for b, g in fixed.items()},
    "hindsight_beta": hindsight,
  }


def targets(results: dict[str, dict], summary: dict[str, Any]) -> list[dict[str, Any]]:
  """Issue 14's targets, each with its numbers and a verdict."""
  table, fixed = summary["table"], summary["fixed"]
  selector, default = table["selector"], table[f"fixed {FIXED_DEFAULT:g}"]
  lowest_fixed_max = min(f["max"] for f in fixed.values())
  rows = {name: r["seeds"][min(r["seeds"], key=int)] for name, r in results.items()}
  untied = {
    n: r["untied"]["selector_vs_best_untied"] for n, r in rows.items() if "untied" in r
  }
  pilot = [r["selection"] for r in rows.values()]
  evaluations = max(p["gradient_evaluations"] for p in pilot)
  out = [
    {
      "target": "selector mean gap <= 1/3 of fixed 0.94377's",
      "value": f"{100 * selector['mean']:.3f}% vs {100 * default['mean']:.3f}% / 3 "
      f"= {100 * default['mean'] / 3:.3f}%",
      "met": selector["mean"] <= default["mean"] / 3,
    },
    {
      "target": "selector max gap below every fixed beta's max gap",
      "value": f"{100 * selector['max']:.3f}% vs lowest fixed max "
      f"{100 * lowest_fixed_max:.3f}%",
      "met": selector["max"] < lowest_fixed_max,
    },
  ]
  if untied:
    out.append(
      {
        "target": "balanced Adam at the selected beta within 1% of the best untied "
        "AdamW (GPT workloads)",
        "value": ", ".join(f"{n} {100 * g:+.2f}%" for n, g in untied.items()),
        "met": all(g <= 0.01 for g in untied.values()),
      }
    )
  out.append(
    {
      "target": f"pilot cost <= 3% of a {REFERENCE_RUN}-step run's gradients",
      "value": f"{evaluations} gradients = {100 * evaluations / REFERENCE_RUN:.2f}%; "
      f"wall {min(p['seconds'] for p in pilot):.1f}-"
      f"{max(p['seconds'] for p in pilot):.1f} s",
      "met": evaluations <= 0.03 * REFERENCE_RUN,
    }
  )
  return out


def format_report(report: dict[str, Any]) -> str:
  """Per-workload rows, the suite table, the seed spread and the verdicts."""
  lines = [
    f"{'workload':<14} {'oracle':>8} {'selector':>9} {'refresh':>8} {'T_ES':>6} "
    f"{'gap sel':>8} {'gap ref':>8} {'gap .944':>9}"
  ]
  for name, r in report["workloads"].items():
    row = r["seeds"][min(r["seeds"], key=int)]
    lines.append(
      f"{name:<14} {row['oracle_beta']:>8.5g} {row['selector_beta']:>9.5g} "
      f"{row['refresh_beta']:>8.5g} {row['t_es']:>6.0f} "
      f"{100 * row['selector_gap']:>7.2f}% {100 * row['refresh_gap']:>7.2f}% "
      f"{100 * row['gap'][key(FIXED_DEFAULT)]:>8.2f}%"
    )
  lines += [
    "",
    "| method | mean gap | max gap | CVaR25 gap |",
    "| --- | --- | --- | --- |",
  ]
  for method, s in report["summary"]["table"].items():
    lines.append(
      f"| {method} | {100 * s['mean']:.2f}% | {100 * s['max']:.2f}% | "
      f"{100 * s['cvar25']:.2f}% |"
    )
  spreads = {
    n: r["seed_spread"] for n, r in report["workloads"].items() if "seed_spread" in r
  }
  if spreads:
    lines += ["", "seed-to-seed spread of the best validation loss (range / mean)"]
    for name, s in spreads.items():
      lines.append(
        f"  {name:<14} median over betas {100 * s['median']:.2f}%, max "
        f"{100 * s['max']:.2f}%; oracle betas {s['oracle_betas']}, selector "
        f"betas {s['selector_betas']}"
      )
  lines += ["", "targets"]
  for t in report["targets"]:
    lines.append(f"  [{'MET' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}")
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Left: gap against beta per workload, with each method's pick; right: table."""
  fig = Figure(figsize=(13, 4.8))
  FigureCanvasAgg(fig)
  curves, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  x = np.array([1 - b for b in GRID])
  for i, (name, r) in enumerate(report["workloads"].items()):
    row = r["seeds"][min(r["seeds"], key=int)]
    gap = 100 * np.array([row["gap"][key(b)] for b in GRID])
    color = f"C{i}"
    curves.plot(x, np.maximum(gap, 1e-3), "-", color=color, lw=1, label=name)
    for beta, marker in ((row["selector_beta"], "*"), (row["refresh_beta"], "s")):
      k = [key(b) for b in GRID].index(key(beta))
      curves.plot(x[k], max(gap[k], 1e-3), marker, color=color, ms=11, mec="k")
  curves.set(
    xscale="log",
    yscale="log",
    xlabel=r"$1 - \beta$ (selection grid)",
    ylabel="gap to the oracle beta (%; a gap of 0 is drawn at 0.001)",
    title="gap per beta; star: selector, square: refresh rule",
  )
  curves.invert_xaxis()
  curves.grid(alpha=0.3)
  curves.legend(fontsize=7)
  table = report["summary"]["table"]
  names = list(table)
  width = 0.27
  for j, stat in enumerate(("mean", "cvar25", "max")):
    bars.bar(
      np.arange(len(names)) + (j - 1) * width,
      [100 * table[n][stat] for n in names],
      width,
      label=stat,
    )
  bars.set_xticks(range(len(names)), labels=names, rotation=15, fontsize=8)
  bars.set(ylabel="gap to the oracle beta (%)", title="across the suite")
  bars.grid(alpha=0.3, axis="y")
  bars.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", choices=sorted(SUITES), default="default")
  parser.add_argument(
    "--workloads", default=None, help="comma-separated subset of the suite's names"
  )
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--plot", default=None, help="PNG figure file")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the protocol, prints the table and verdicts, writes JSON and PNG."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  specs = SUITES[args.size]
  if args.workloads:
    wanted = args.workloads.split(",")
    unknown = set(wanted) - {s.name for s in specs}
    if unknown:
      raise SystemExit(f"unknown workloads {sorted(unknown)}")
    specs = [s for s in specs if s.name in wanted]
  suffix = "" if args.size == "default" else f"_{args.size}"
  out = args.out or os.path.join(
    "benchmarks", "results", f"beta_selection{suffix}.json"
  )
  plot_path = args.plot or os.path.splitext(out)[0] + ".png"
  started = time.perf_counter()
  report: dict[str, Any] = {
    "size": args.size,
    "device": machine.describe(),
    "grid": list(GRID),
    "untied_grid": [list(p) for p in UNTIED],
    "workloads": {spec.name: run_workload(spec, args.size) for spec in specs},
  }
  report["summary"] = suite_table(report["workloads"])
  report["targets"] = targets(report["workloads"], report["summary"])
  report["wall_s"] = time.perf_counter() - started
  print(format_report(report))
  print(f"total {report['wall_s']:.0f} s")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, default=float)
  plot(report, plot_path)
  print(f"wrote {out} and {plot_path}")
  return report


if __name__ == "__main__":
  main()
