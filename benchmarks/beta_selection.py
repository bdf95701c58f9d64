r"""Choosing beta, v2: learning rate tuned per beta, seeds, run lengths.

For every workload of a suite (``benchmarks.workloads``: the character GPT at
two batch sizes and on the Sonnets, a tiny ViT, an MLP and a small conv net on
digits, a regression MLP, noisy quadratics at two batch sizes), each with its
warmup + cosine recipe:

1. Sweep. Every (seed, beta, learning rate) of the grid: the 7 memories
   0.68377 .. 0.99 of [FH26b]'s grid, peak learning rates ref/2, ref, 2 ref
   around the workload's reference, 3 seeds (initialisation and data order),
   all in one vmapped program (``workloads.train_sweep``); where a quarter of
   a workload's runs find their best lr at an end of the lr grid, one more lr
   (x2 past that end) is trained. A run's loss is its best validation loss.
2. Scores. ``L_s(beta)`` = the best loss over the lr grid at seed s; a beta's
   score is ``mean_s L_s(beta)``; the oracle ``beta*`` has the lowest score; a
   method that picks ``beta_s`` at seed s has the gap
   ``mean_s L_s(beta_s) / mean_s L_s(beta*) - 1`` (a fixed beta: its gap).
   Seed spread: the per-seed gap ``g_s = L_s(beta_s) / L_s(beta*) - 1`` (beta*
   the seed-mean oracle) is computed for each seed, and a statistic's spread
   is the standard deviation over seeds (ddof 1) of that statistic computed
   from one seed's gaps.
3. Methods: every fixed beta; the best fixed in hindsight (lowest mean gap
   over the suite); [FH26b]'s refresh rule (R = 1000 on ``T_ES`` read by
   ``estimate_effective_horizon`` from the seed's fixed-0.94377 run at the
   reference lr); the run-length rule ``beta = 1 - R/T`` snapped to the grid
   (``T`` the run's updates, ``R`` fit on published oracles only: see
   ``RUN_LENGTH_R``); ``select_beta`` as published (pilot of 200 updates at
   0.95 on the workload's recipe at its reference lr, default probes), its
   design-only constant (``beta_ceiling``, the beta of ``H = (m L^2/8)^(1/3)``),
   ``select_beta(change_estimate='noise_corrected')`` (read from the same
   pilot), and at ``--size=large`` a late pilot (``T_p`` = warmup + 200, so
   the lags lie after warmup). Selectors choose among the swept grid
   (``beta_range`` = its ends).
4. Across the suite: mean / max / CVaR25 gap per method with seed spread;
   the targets with verdicts; on the GPT workloads balanced Adam at the
   candidate rule's beta against the best untied (beta1, beta2) AdamW of a
   3 x 3 grid, lr tuned on the same grid; the best lr's dependence on beta
   against the fixed-update-RMS hypothesis ``lr ~ sqrt((1+beta)/(1-beta))``.

Usage, from the repository root::

  python -m benchmarks.beta_selection                  # 22 min, 2 shared CPU cores
  python -m benchmarks.beta_selection --size=smoke     # ~1 min, for the tests
  python -m benchmarks.beta_selection --size=large     # longer runs, a GPU
  python -m benchmarks.beta_selection --workloads=gpt_b16,quadratic_b8 --out=a.json
  python -m benchmarks.beta_selection --from-json=a.json,b.json  # merge, re-report

References:
  Fernandez-Hernandez et al., `Refresh-Scaling the Memory of Balanced Adam
  <https://arxiv.org/abs/2605.10119>`_, 2026.

  Fernandez-Hernandez et al., Early Memory Selection for Balanced Adam, 2026.

  Orvieto and Gower, In Search of Adam's Secret Sauce, arXiv 2505.21829, 2025.
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
from examples.common import config as config_lib

# [FH26b]'s published grid values from 0.68377 to 0.99 (BETA_GRID's).
GRID = (0.68377, 0.82217, 0.9, 0.94377, 0.96838, 0.98222, 0.99)
LR_SCALES = (0.5, 1.0, 2.0)
# Where this share of a workload's runs find their best lr at an end of
# LR_SCALES, the grid gets one more lr beyond that end (x2).
EXTEND_SHARE = 0.25
SEEDS = (0, 1, 2)
FIXED_DEFAULT = 0.94377  # the grid's "0.95", the pilot's memory
UNTIED = tuple((b1, b2) for b1 in (0.8, 0.9, 0.95) for b2 in (0.95, 0.99, 0.999))
# The run-length rule's R = (1 - beta*) T, from published oracles only (never
# fit on this benchmark): the trainers' rule (examples/common/config.py says
# how it is fit).
PUBLISHED_R = config_lib.RUN_LENGTH_PUBLISHED_R
RUN_LENGTH_R = float(config_lib.RUN_LENGTH_REFRESH)
REFRESH_R = 1000.0
CANDIDATE = "run-length rule"  # declared before any measurement
# select_beta's resolution: a noise-corrected change counts as measured above
# this many standard errors (balanced_optax.selection's constant).
RESOLVED = 2.0


@dataclasses.dataclass(frozen=True)
class Spec:
  """One workload of a suite: a kind of ``workloads.make_workload`` + fields."""

  name: str
  kind: str
  fields: dict[str, Any]


def _suite(gpt_steps: int, steps: int, scale: int = 1, **gpt) -> list[Spec]:
  """The suite: the GPTs run ``gpt_steps``, the others ``steps`` times 1/2 .. 2.

  ``gpt`` overrides the GPT's shape (default: one block of width 32); the
  other workloads' lengths differ so that the run-length rule is tried at
  several T.
  """
  gpt = dict(dict(d_model=32 * scale, num_layers=scale, num_heads=2 * scale), **gpt)

  def spec(name, kind, num_steps, **fields):
    every = max(1, num_steps // 20)
    return Spec(name, kind, dict(fields, num_steps=num_steps, eval_every=every))

  return [
    spec("gpt_b8", "gpt", gpt_steps, batch_size=8, **gpt),
    spec("gpt_b32", "gpt", gpt_steps, batch_size=32, **gpt),
    spec("gpt_sonnets", "gpt_sonnets", gpt_steps, batch_size=16, **gpt),
    spec("vit_digits", "vit_digits", steps),
    spec("conv_digits", "conv_digits", steps, channels=8 * scale),
    spec("mlp_digits", "mlp_digits", 3 * steps // 2),
    spec("regression", "regression", steps),
    spec("quadratic_b8", "quadratic", 2 * steps, batch_size=8),
    spec("quadratic_b64", "quadratic", steps // 2, batch_size=64),
  ]


SUITES = {
  "smoke": [
    Spec("gpt_b16", "gpt", dict(d_model=16, num_layers=1, num_steps=40, eval_every=10)),
    Spec("quadratic_b8", "quadratic", dict(num_steps=40, eval_every=10)),
  ],
  "default": _suite(gpt_steps=400, steps=2000),
  "large": _suite(gpt_steps=4000, steps=10_000, scale=2),
}
# The untied AdamW pairs at the default size (the 3 x 3 UNTIED grid at large):
# AdamW's default, the LLM habit (0.9, 0.95) and their neighbours.
UNTIED_DEFAULT = ((0.8, 0.99), (0.9, 0.95), (0.9, 0.99), (0.9, 0.999), (0.95, 0.99))
# A late pilot costs a second pilot per seed (~40 s of compiling on a busy CPU
# core each): only at the large size.
LATE_PILOT = {"smoke": False, "default": False, "large": True}
# What the smoke size cuts (the protocol, not the numbers, is what it checks).
SMOKE = dict(
  betas=(0.9, 0.99),
  lr_scales=(0.5, 1.0),
  seeds=(0, 1),
  untied=((0.9, 0.99), (0.95, 0.95)),
  pilot=dict(pilot_steps=20, lags=(2, 5, 10)),
)


# ----------------------------------------------------------------------------
# Scoring (pure functions of the saved numbers).


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


def seed_scores(best: np.ndarray) -> np.ndarray:
  """``(S, B)`` ``L_s(beta)``: the best loss over the lr axis of ``(S, B, K)``."""
  return np.where(np.isfinite(best), best, np.inf).min(axis=-1)


def method_gap(scores_sb: np.ndarray, picks: Sequence[int]) -> dict[str, Any]:
  """The gap of a method that picks beta index ``picks[s]`` at seed s.

  Returns ``{"gap", "per_seed"}``: ``mean_s L_s(pick) / mean_s L_s(oracle) - 1``
  and the per-seed ``L_s(pick_s) / L_s(oracle) - 1``, oracle the beta with
  the lowest seed-mean score.
  """
  oracle = int(np.argmin(scores_sb.mean(axis=0)))
  chosen = scores_sb[np.arange(len(picks)), list(picks)]
  return {
    "gap": float(chosen.mean() / scores_sb[:, oracle].mean() - 1),
    "per_seed": (chosen / scores_sb[:, oracle] - 1).tolist(),
  }


def suite_summary(gaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Mean / max / CVaR25 over workloads, each with its spread over seeds.

  ``gaps`` maps workload -> ``method_gap``'s answer. The spread of a
  statistic is the standard deviation (ddof 1) over seeds of the statistic
  computed from each seed's own gaps.
  """
  out = summarize([g["gap"] for g in gaps.values()])
  per_seed = np.array([g["per_seed"] for g in gaps.values()])  # (W, S)
  stats = [summarize(per_seed[:, s]) for s in range(per_seed.shape[1])]
  for name in ("mean", "max", "cvar25"):
    values = [s[name] for s in stats]
    out[f"{name}_spread"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  out["per_seed_mean"] = [s["mean"] for s in stats]
  return out


def snap(beta: float, grid: Sequence[float] = GRID) -> float:
  """``beta`` (any real) snapped to the grid; below the grid: its shortest."""
  return float(bo.snap_beta(min(max(beta, 0.0), 0.999999), grid=grid))


def run_length_beta(num_steps: int, refresh: float = RUN_LENGTH_R) -> float:
  """The run-length rule: ``1 - R / T`` snapped to the grid."""
  return snap(1.0 - refresh / num_steps)


def refresh_beta(steps: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
  """``(T_ES, beta)``: [FH26b]'s rule, R = 1000, snapped to the grid."""
  finite = np.isfinite(losses)
  t_es = float(bo.estimate_effective_horizon(losses[finite], steps[finite]))
  beta = 1.0 - REFRESH_R / t_es if t_es > 0 else 0.0
  return t_es, snap(beta)


def lr_fit(
  best: dict[str, np.ndarray],
  betas: Sequence[float],
  lr_scales: Sequence[float] | dict[str, Sequence[float]],
) -> dict[str, Any]:
  """How the best lr moves with beta, against ``lr ~ sqrt((1+beta)/(1-beta))``.

  Per (workload, seed, beta) the best lr's log2 is read by a parabola through
  the three lr-grid points around the argmin (clipped to the grid's ends); the
  slope of log2(lr*) on log2 sqrt((1+beta)/(1-beta)) is fit with one intercept
  per (workload, seed). Slope 1: the best lr keeps the update RMS fixed;
  slope 0: the best lr does not depend on beta. ``lr_scales`` may differ per
  workload (a dict by the names of ``best``).
  """
  xs, ys, edges, total, argmin_k = [], [], 0, 0, []
  for name, b in best.items():  # (S, B, K)
    scales = lr_scales[name] if isinstance(lr_scales, dict) else lr_scales
    log_lr = np.log2(np.asarray(scales, np.float64))
    for per_seed in b:
      x = np.log2(np.sqrt((1 + np.asarray(betas)) / (1 - np.asarray(betas))))
      y = np.array([_parabola_min(log_lr, row) for row in per_seed])
      k = np.argmin(np.where(np.isfinite(per_seed), per_seed, np.inf), axis=-1)
      edges += int(np.sum((k == 0) | (k == len(scales) - 1)))
      total += len(k)
      argmin_k.append(k.tolist())
      xs.append(x - x.mean())
      ys.append(y - y.mean())
  x, y = np.concatenate(xs), np.concatenate(ys)
  slope = float(x @ y / (x @ x))
  residual = y - slope * x
  dof = max(1, len(x) - len(xs) - 1)
  stderr = float(np.sqrt(residual @ residual / dof / (x @ x)))
  return {
    "slope": slope,
    "slope_stderr": stderr,
    "edge_fraction": edges / max(1, total),
    "argmin_lr_index": argmin_k,
  }


def _parabola_min(log_lr: np.ndarray, losses: np.ndarray) -> float:
  """log2 lr of the minimum of the parabola through (log lr, log loss)."""
  losses = np.where(np.isfinite(losses), losses, np.inf)
  k = int(np.argmin(losses))
  if len(log_lr) < 3 or k in (0, len(log_lr) - 1) or not np.all(np.isfinite(losses)):
    return float(log_lr[k])
  x, y = log_lr[k - 1 : k + 2], np.log(losses[k - 1 : k + 2])
  a, b, _ = np.polyfit(x, y, 2)
  return float(np.clip(-b / (2 * a), log_lr[0], log_lr[-1])) if a > 0 else float(x[1])


# ----------------------------------------------------------------------------
# Measuring.


def select(workload, seed: int, betas, **options) -> dict[str, Any]:
  """``balanced_optax.select_beta`` on the workload's recipe, among ``betas``."""
  params = workload.init(jax.random.key(seed))
  selection = bo.select_beta(
    lambda beta: workload.optimizer(beta),
    jax.grad(workload.loss),
    lambda step: workload.train_batch(step, seed),
    params,
    seed=seed,
    beta_range=(min(betas), max(betas)),
    grid=betas,
    **options,
  )
  return {
    "beta": float(selection.beta),
    "beta_ceiling": float(selection.beta_ceiling),
    "horizon": float(selection.horizon),
    "noise": float(selection.noise),
    "corrected_change": float(selection.corrected_change),
    "corrected_change_stderr": float(selection.corrected_change_stderr),
    "pilot_moved": bool(selection.pilot_moved),
    "noise_share": float(selection.noise_share),
    "design_limited": bool(selection.design_limited),
    "pilot_steps": int(selection.pilot_steps),
    "gradient_evaluations": int(selection.gradient_evaluations),
    "seconds": float(selection.seconds),
  }


def noise_corrected_beta(selection: dict[str, Any], betas: Sequence[float]) -> float:
  """What ``select_beta(change_estimate="noise_corrected")`` picks, from the
  published run's fields (the pilot and probes are the same: only the change
  the rule uses differs, ``max(D~, 2 sigma)``, or 0 where nothing moved nor
  changed).
  """
  resolution = RESOLVED * selection["corrected_change_stderr"]
  change = max(selection["corrected_change"], resolution)
  if not (selection["pilot_moved"] or selection["corrected_change"] > resolution):
    change = 0.0
  return float(
    bo.beta_from_noise_and_lag(
      selection["noise"], change, beta_range=(min(betas), max(betas)), grid=betas
    )
  )


def tuned_sweep(
  workload, lr_scales: Sequence[float], seeds: Sequence[int], extend: bool, **grid
) -> tuple[list[float], workloads.History]:
  """``workloads.train_sweep``, its lr grid extended where the best sits at an end.

  Where at least ``EXTEND_SHARE`` of the (seed, memory) runs have their best
  lr at an end of ``lr_scales``, one more lr (x2 beyond that end) is trained
  and joined to the grid (once per end). Returns the lr scales and the joined
  history (``val_loss`` ``(S, B, K, E)``, K in increasing lr).
  """
  sweep = workloads.train_sweep(workload, lr_scales=lr_scales, seeds=seeds, **grid)
  scales, val_loss, seconds = list(lr_scales), sweep.val_loss, sweep.seconds
  if extend:
    k = np.argmin(np.where(np.isfinite(sweep.best), sweep.best, np.inf), axis=-1)
    for end, new in ((0, scales[0] / 2), (len(scales) - 1, scales[-1] * 2)):
      if np.mean(k == end) < EXTEND_SHARE:
        continue
      extra = workloads.train_sweep(workload, lr_scales=(new,), seeds=seeds, **grid)
      seconds += extra.seconds
      if end == 0:
        scales, val_loss = [new, *scales], np.concatenate([extra.val_loss, val_loss], 2)
      else:
        scales, val_loss = [*scales, new], np.concatenate([val_loss, extra.val_loss], 2)
  return scales, workloads.History(sweep.steps, val_loss, seconds)


def run_workload(spec: Spec, size: str) -> dict[str, Any]:
  """The sweep, the rules' and selectors' picks (and untied AdamW) on one workload."""
  smoke = size == "smoke"
  betas = SMOKE["betas"] if smoke else GRID
  lr_scales = SMOKE["lr_scales"] if smoke else LR_SCALES
  seeds = SMOKE["seeds"] if smoke else SEEDS
  pilot = SMOKE["pilot"] if smoke else {}
  workload = workloads.make_workload(spec.kind, name=spec.name, **spec.fields)
  warmup = max(1, workload.num_steps // 20)
  extend = not smoke
  scales, sweep = tuned_sweep(workload, lr_scales, seeds, extend, betas=betas)
  result: dict[str, Any] = {
    "kind": workload.kind,
    "batch_size": workload.batch_size,
    "num_steps": workload.num_steps,
    "warmup_steps": warmup,
    "learning_rate": workload.learning_rate,
    "betas": list(betas),
    "lr_scales": scales,
    "seeds": list(seeds),
    "steps": sweep.steps.tolist(),
    "best": sweep.best.tolist(),
    "val_loss": np.round(sweep.val_loss, 5).tolist(),
    "sweep_seconds": sweep.seconds,
  }
  reference = betas.index(min(betas, key=lambda b: abs(b - FIXED_DEFAULT)))
  one = scales.index(1.0)
  refresh = [
    refresh_beta(sweep.steps, sweep.val_loss[s, reference, one])
    for s in range(len(seeds))
  ]
  result["t_es"] = [t for t, _ in refresh]
  picks = {"refresh rule (R = 1000)": [b for _, b in refresh]}
  started = time.perf_counter()
  selections = {"select_beta": [select(workload, s, betas, **pilot) for s in seeds]}
  if LATE_PILOT[size]:
    late = dict(pilot, pilot_steps=warmup + pilot.get("pilot_steps", 200))
    selections["select_beta late pilot"] = [
      select(workload, s, betas, **late) for s in seeds
    ]
  result["selector_seconds"] = time.perf_counter() - started
  result["selections"] = selections
  for method, chosen in list(selections.items()):
    picks[method] = [c["beta"] for c in chosen]
    picks[method + " noise_corrected"] = [
      noise_corrected_beta(c, betas) for c in chosen
    ]
  picks["select_beta design-only constant"] = [
    c["beta_ceiling"] for c in selections["select_beta"]
  ]
  result["picks"] = picks
  if workload.kind == "gpt":
    pairs = {"smoke": SMOKE["untied"], "default": UNTIED_DEFAULT}.get(size, UNTIED)
    untied_scales, untied = tuned_sweep(
      workload, lr_scales, seeds, extend, untied=pairs
    )
    result["untied"] = {
      "pairs": [list(p) for p in pairs],
      "lr_scales": untied_scales,
      "best": untied.best.tolist(),
      "seconds": untied.seconds,
    }
  return result


# ----------------------------------------------------------------------------
# Analysis (from the saved numbers: ``--from-json`` reruns only this).


def analyze(report: dict[str, Any]) -> dict[str, Any]:
  """Per-workload gaps, the suite table, the lr fit and the targets."""
  results = report["workloads"]
  betas = next(iter(results.values()))["betas"]
  per_workload, gaps = {}, {}
  for name, r in results.items():
    scores = seed_scores(np.asarray(r["best"]))
    num_seeds = scores.shape[0]
    oracle = int(np.argmin(scores.mean(axis=0)))
    picks = {f"fixed {b:g}": [b] * num_seeds for b in betas}
    picks["run-length rule"] = [
      snap(1.0 - report["run_length_r"] / r["num_steps"], betas)
    ] * (num_seeds)
    picks.update(r["picks"])
    index = {m: [_index(betas, b) for b in p] for m, p in picks.items()}
    gaps[name] = {m: method_gap(scores, k) for m, k in index.items()}
    per_workload[name] = {
      "oracle_beta": betas[oracle],
      "oracle_score": float(scores[:, oracle].mean()),
      "seed_oracles": [betas[k] for k in np.argmin(scores, axis=1)],
      "picks": picks,
      "gap": {m: g["gap"] for m, g in gaps[name].items()},
      "gap_spread": {
        m: float(np.std(g["per_seed"], ddof=1)) if num_seeds > 1 else 0.0
        for m, g in gaps[name].items()
      },
    }
    if "untied" in r:
      untied = seed_scores(np.asarray(r["untied"]["best"])).mean(axis=0)
      k = int(np.argmin(untied))
      rule = _index(betas, picks[CANDIDATE][0])
      per_workload[name]["untied"] = {
        "best_pair": r["untied"]["pairs"][k],
        "best_score": float(untied[k]),
        "candidate_vs_best_untied": float(scores[:, rule].mean() / untied[k] - 1),
        "oracle_vs_best_untied": float(scores[:, oracle].mean() / untied[k] - 1),
      }
  methods = list(next(iter(gaps.values())))
  table = {m: suite_summary({w: g[m] for w, g in gaps.items()}) for m in methods}
  fixed = [m for m in methods if m.startswith("fixed ")]
  hindsight = min(fixed, key=lambda m: table[m]["mean"])
  table = {"best fixed in hindsight (" + hindsight[6:] + ")": table[hindsight], **table}
  summary = {
    "workloads": per_workload,
    "table": table,
    "hindsight": hindsight,
    "lr_fit": lr_fit(
      {n: np.asarray(r["best"]) for n, r in results.items()},
      betas,
      {n: r["lr_scales"] for n, r in results.items()},
    ),
  }
  summary["targets"] = targets(summary, report)
  return summary


def _index(betas: Sequence[float], beta: float) -> int:
  return int(np.argmin([abs(b - beta) for b in betas]))


def targets(summary: dict[str, Any], report: dict[str, Any]) -> list[dict[str, Any]]:
  """Issue 24's targets for every rule (the candidate's are the verdicts)."""
  table, hindsight = summary["table"], summary["hindsight"]
  best_fixed = table[hindsight]
  fixed = {m: s for m, s in table.items() if m.startswith("fixed ")}
  out = []
  rules = [m for m in table if not m.startswith(("fixed ", "best fixed"))]
  for method in [CANDIDATE] + [m for m in rules if m != CANDIDATE]:
    s = table[method]
    advantage = np.subtract(best_fixed["per_seed_mean"], s["per_seed_mean"])
    spread = float(np.std(advantage, ddof=1)) if len(advantage) > 1 else 0.0
    lowest_fixed_max = min(f["max"] for f in fixed.values())
    tag = "" if method == CANDIDATE else " (other rule)"
    out += [
      {
        "method": method,
        "target": f"{method}{tag}: mean gap <= 1/2 of the best fixed's",
        "value": f"{100 * s['mean']:.3f}% vs {100 * best_fixed['mean']:.3f}% / 2",
        "met": s["mean"] <= best_fixed["mean"] / 2,
      },
      {
        "method": method,
        "target": f"{method}{tag}: max gap below every fixed beta's",
        "value": f"{100 * s['max']:.3f}% vs lowest fixed max "
        f"{100 * lowest_fixed_max:.3f}%",
        "met": s["max"] < lowest_fixed_max,
      },
      {
        "method": method,
        "target": f"{method}{tag}: advantage over the best fixed > its seed spread",
        "value": f"{100 * (best_fixed['mean'] - s['mean']):+.3f}% vs spread "
        f"{100 * spread:.3f}%",
        "met": bool(best_fixed["mean"] - s["mean"] > spread),
      },
    ]
  untied = {n: w["untied"] for n, w in summary["workloads"].items() if "untied" in w}
  if untied:
    out.append(
      {
        "method": CANDIDATE,
        "target": f"GPT: balanced Adam at the {CANDIDATE}'s beta within 1% of the best "
        "untied AdamW",
        "value": ", ".join(
          f"{n} {100 * u['candidate_vs_best_untied']:+.2f}% (best pair "
          f"{tuple(u['best_pair'])})"
          for n, u in untied.items()
        ),
        "met": all(u["candidate_vs_best_untied"] <= 0.01 for u in untied.values()),
      }
    )
  if "wall_s" in report:
    out.append(
      {
        "method": "",
        "target": "the whole run <= 60 min",
        "value": f"{report['wall_s'] / 60:.1f} min",
        "met": report["wall_s"] <= 3600,
      }
    )
  return out


def format_report(report: dict[str, Any]) -> str:
  """Per-workload rows, the suite table, the lr fit and the verdicts."""
  summary = report["summary"]
  lines = [
    f"run-length rule: R = {report['run_length_r']:.0f} (published oracles "
    f"{report['published_r']}, geometric mean of each range, then of the sources)",
    "",
    f"{'workload':<14} {'T':>6} {'oracle':>8} {'seed oracles':<26} {'run-len':>8} "
    f"{'refresh':>8} {'sel':>8} {'gap run':>8} {'gap .944':>9}",
  ]
  for name, w in summary["workloads"].items():
    r = report["workloads"][name]
    lines.append(
      f"{name:<14} {r['num_steps']:>6} {w['oracle_beta']:>8.5g} "
      f"{w['seed_oracles']!s:<26} {w['picks']['run-length rule'][0]:>8.5g} "
      f"{w['picks']['refresh rule (R = 1000)']!s:>8} "
      f"{w['picks']['select_beta']!s:>8} "
      f"{100 * w['gap']['run-length rule']:>7.2f}% "
      f"{100 * w['gap'].get('fixed 0.94377', float('nan')):>8.2f}%"
    )
  lines += [
    "",
    "gap = mean over seeds of the best loss over the lr grid at the method's beta,",
    "relative to the oracle's; +- = std over seeds of the statistic of one seed's gaps",
    "",
    "| method | mean gap | max gap | CVaR25 gap |",
    "| --- | --- | --- | --- |",
  ]
  for method, s in summary["table"].items():
    lines.append(
      f"| {method} | {100 * s['mean']:.2f} ± {100 * s['mean_spread']:.2f}% | "
      f"{100 * s['max']:.2f} ± {100 * s['max_spread']:.2f}% | "
      f"{100 * s['cvar25']:.2f} ± {100 * s['cvar25_spread']:.2f}% |"
    )
  untied = {n: w["untied"] for n, w in summary["workloads"].items() if "untied" in w}
  if untied:
    lines += [
      "",
      "GPT: balanced Adam against the best untied AdamW (lr tuned, seed mean)",
    ]
    for name, u in untied.items():
      lines.append(
        f"  {name:<14} best pair {tuple(u['best_pair'])}: {CANDIDATE} "
        f"{100 * u['candidate_vs_best_untied']:+.2f}%, oracle beta "
        f"{100 * u['oracle_vs_best_untied']:+.2f}%"
      )
  fit = summary["lr_fit"]
  lines += [
    "",
    f"best lr vs beta: slope of log2 lr* on log2 sqrt((1+b)/(1-b)) = "
    f"{fit['slope']:.3f} ± {fit['slope_stderr']:.3f} (1: fixed update RMS; 0: "
    f"lr independent of beta); best lr at a grid edge in "
    f"{100 * fit['edge_fraction']:.0f}% of (workload, seed, beta)",
    "",
    "targets",
  ]
  for t in summary["targets"]:
    lines.append(f"  [{'MET' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}")
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Left: gap against beta per workload; right: the suite table's bars."""
  summary = report["summary"]
  fig = Figure(figsize=(14, 5))
  FigureCanvasAgg(fig)
  curves, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  for i, (name, w) in enumerate(summary["workloads"].items()):
    betas = report["workloads"][name]["betas"]
    x = 1 - np.asarray(betas)
    gap = 100 * np.array([w["gap"][f"fixed {b:g}"] for b in betas])
    spread = 100 * np.array([w["gap_spread"][f"fixed {b:g}"] for b in betas])
    curves.errorbar(
      x, gap, yerr=spread, fmt="-", color=f"C{i}", lw=1, capsize=2, label=name
    )
    k = _index(betas, w["picks"][CANDIDATE][0])
    curves.plot(x[k], gap[k], "*", color=f"C{i}", ms=12, mec="k")
  curves.set(
    xscale="log",
    xlabel=r"$1 - \beta$",
    ylabel="gap to the oracle beta (%; seed mean ± std)",
    title=f"gap per beta; star: {CANDIDATE}",
  )
  curves.set_yscale("symlog", linthresh=0.1)
  curves.invert_xaxis()
  curves.grid(alpha=0.3)
  curves.legend(fontsize=7)
  table = summary["table"]
  names = list(table)
  width = 0.27
  for j, stat in enumerate(("mean", "cvar25", "max")):
    bars.bar(
      np.arange(len(names)) + (j - 1) * width,
      [100 * table[n][stat] for n in names],
      width,
      yerr=[100 * table[n][f"{stat}_spread"] for n in names],
      label=stat,
    )
  bars.set_xticks(range(len(names)), labels=names, rotation=60, ha="right", fontsize=7)
  bars.set(ylabel="gap to the oracle beta (%)", title="across the suite")
  bars.set_yscale("symlog", linthresh=0.1)
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
  parser.add_argument(
    "--from-json",
    default=None,
    help="comma-separated result files: merge their workloads, re-report, re-plot",
  )
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--plot", default=None, help="PNG figure file")
  return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
  """Trains the suite (or the chosen subset)."""
  specs = SUITES[args.size]
  if args.workloads:
    wanted = args.workloads.split(",")
    unknown = set(wanted) - {s.name for s in specs}
    if unknown:
      raise SystemExit(f"unknown workloads {sorted(unknown)}")
    specs = [s for s in specs if s.name in wanted]
  started = time.perf_counter()
  results = {}
  for spec in specs:
    results[spec.name] = run_workload(spec, args.size)
    r = results[spec.name]
    print(
      f"{spec.name:<14} T {r['num_steps']}: sweep {r['sweep_seconds']:.0f} s, "
      f"selectors {r['selector_seconds']:.0f} s"
      + (f", untied {r['untied']['seconds']:.0f} s" if "untied" in r else ""),
      flush=True,
    )
  return {
    "size": args.size,
    "device": machine.describe(),
    "run_length_r": RUN_LENGTH_R,
    "published_r": PUBLISHED_R,
    "late_pilot": LATE_PILOT[args.size],
    "workloads": results,
    "wall_s": time.perf_counter() - started,
  }


def merge(paths: Sequence[str]) -> dict[str, Any]:
  """Reports of several runs (e.g. workload subsets) as one; wall times add."""
  reports = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      reports.append(json.load(f))
  merged = dict(reports[0])
  merged["workloads"] = {n: w for r in reports for n, w in r["workloads"].items()}
  merged["wall_s"] = sum(r.get("wall_s", 0.0) for r in reports)
  return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs (or reloads) the benchmark; prints the table and verdicts; JSON + PNG."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.from_json:
    report = merge(args.from_json.split(","))
    default_out = args.from_json.split(",")[0]
  else:
    report = measure(args)
    suffix = "" if args.size == "default" else f"_{args.size}"
    default_out = os.path.join("benchmarks", "results", f"beta_selection{suffix}.json")
  out = args.out or default_out
  plot_path = args.plot or os.path.splitext(out)[0] + ".png"
  report["summary"] = analyze(report)
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
