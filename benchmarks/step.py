r"""Speed, memory and compile time of one optimizer step, against optax.adam.

The step is what a training loop runs after the backward pass,

    params, state = step(params, state, grads)   # tx.update + apply_updates

jitted with ``params`` and ``state`` donated, for ``--params`` float32
parameters split into ``--leaves`` equal leaves. Every optimizer here is
elementwise, so the step is memory-bound: per parameter it must at least read
p, g, m, v and write p, m, v, i.e. 28 bytes in float32 (20 with bfloat16
moments). The ``memory_bound`` variant does only that, with an add per array,
and is the floor the others are held to (on XLA:CPU, which has no multi-output
fusion, even it is three kernels moving 36 bytes). ``call_overhead`` is a
jitted identity over the same donated buffers: no kernel at all, only what the
host pays per call; where it nears the memory bound (many leaves on a GPU) the
step is host-bound and the ratios say nothing about the optimizer.

The variants run interleaved (round-robin in a fresh random order each round,
``--rounds`` rounds), so drift in how busy the machine is hits them alike;
times are medians with their interquartile range, and ratios are medians of
per-round ratios. Each variant is also compiled ``--compile-repeats`` times
(median compile time), and the compiled executable reports its memory
(``memory_analysis()``) and its optimized HLO, from which the number of
kernels, copies and the bytes they move are read (``benchmarks.hlo``).

Usage, from the repository root (jax picks the default backend, so the same
command runs on CPU, GPU or TPU)::

  python -m benchmarks.step                        # 2**24 params; 1,4,64,512 leaves
  python -m benchmarks.step --quick                # a tiny run, seconds
  python -m benchmarks.step --leaves=64 --dump-hlo=/tmp/hlo

Results go to ``--out`` (default ``benchmarks/results/step_<platform>.json``).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import machine, scale_range
from benchmarks.step_measure import BETA, EPS, LEARNING_RATE, VARIANTS, bench_leaves
from benchmarks.step_report import format_report
from benchmarks.step_targets import evaluate_targets

# Defaults of a full run and of --quick; flags given explicitly win over both.
_FULL = {
  "params": 2**24,
  "leaves": "1,4,64,512",
  "rounds": 25,
  "warmup_rounds": 2,
  "sample_seconds": 0.05,
  "compile_repeats": 3,
}
_QUICK = {
  "params": 2**14,
  "leaves": "1,4",
  "rounds": 3,
  "warmup_rounds": 1,
  "sample_seconds": 0.001,
  "compile_repeats": 1,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--params", type=int, help="float32 params (2**24)")
  parser.add_argument("--leaves", help="leaf counts (1,4,64,512)")
  parser.add_argument("--variants", default="all", help="comma-separated names")
  parser.add_argument("--rounds", type=int, help="interleaved rounds (25)")
  parser.add_argument("--warmup-rounds", type=int, help="untimed rounds first (2)")
  parser.add_argument(
    "--sample-seconds", type=float, help="least time of a typical sample (0.05)"
  )
  parser.add_argument(
    "--compile-repeats", type=int, help="compiles per variant, for a median (3)"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--dump-hlo", default=None, help="folder for optimized HLO")
  parser.add_argument(
    "--quick",
    action="store_true",
    help="2**14 params, leaves 1,4, 3 rounds: a smoke run",
  )
  args = parser.parse_args(argv)
  for name, value in (_QUICK if args.quick else _FULL).items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark, prints the tables, writes and returns the results."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  leaf_counts = [int(n) for n in args.leaves.split(",")]
  variants = VARIANTS
  if args.variants != "all":
    wanted = args.variants.split(",")
    unknown = set(wanted) - {v.name for v in VARIANTS}
    if unknown:
      raise SystemExit(f"unknown variants {sorted(unknown)}")
    variants = tuple(v for v in VARIANTS if v.name in wanted)
  device = machine.describe()
  out = args.out or os.path.join(
    "benchmarks",
    "results",
    f"step_{device['platform']}{'_quick' if args.quick else ''}.json",
  )
  report = {
    "device": device,
    "config": {
      k: getattr(args, k)
      for k in (
        "params",
        "rounds",
        "warmup_rounds",
        "sample_seconds",
        "compile_repeats",
      )
    }
    | {"leaves": leaf_counts, "beta": BETA, "eps": EPS, "learning_rate": LEARNING_RATE},
    "results": {},
    # What scale_safe buys, beside what it costs (seconds, tiny arrays).
    "scale_range": scale_range.run(),
  }
  started = time.perf_counter()
  for n in leaf_counts:
    print(f"{n} leaves ...", flush=True)
    report["results"][str(n)] = bench_leaves(
      variants,
      args.params,
      n,
      rounds=args.rounds,
      warmup_rounds=args.warmup_rounds,
      sample_seconds=args.sample_seconds,
      compile_repeats=args.compile_repeats,
      seed=args.seed,
      dump_hlo=args.dump_hlo,
    )
    # Written after every leaf count, so a run cut short keeps what it measured.
    device["load_average_end"] = machine.load_average()
    report["wall_s"] = time.perf_counter() - started
    report["targets"] = evaluate_targets(report["results"])
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)
  print(format_report(report))
  print()
  print(scale_range.format_rows(report["scale_range"]))
  print(f"wrote {out}")
  return report


if __name__ == "__main__":
  main()
