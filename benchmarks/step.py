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
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo
from benchmarks import hlo, machine, scale_range, stats

LEARNING_RATE = 1e-3
BETA = 0.95
EPS = 1e-8
# A variant is compiled again (for a median) only while its compiles so far
# took less than this: slow compiles are steady enough and would dominate.
COMPILE_REPEAT_BUDGET_S = 5.0


def memory_bound_reference() -> optax.GradientTransformation:
  """The least a step can do: read p, g, m, v; write p, m, v.

  ``m' = m + g``, ``v' = v + g``, ``p' = p - m'``: one add per array keeps
  every input live and every output fresh, with nothing to compute.
  """

  def init_fn(params):
    return (optax.tree.zeros_like(params), optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    m, v = state
    m = jax.tree.map(jnp.add, m, updates)
    v = jax.tree.map(jnp.add, v, updates)
    return jax.tree.map(jnp.negative, m), (m, v)

  return optax.GradientTransformation(init_fn, update_fn)


def _chain(estimator: optax.GradientTransformation) -> optax.GradientTransformation:
  """The composed form: an estimator, the direction rule, the learning rate."""
  return optax.chain(
    estimator, bo.snr_sign_step(EPS), optax.scale_by_learning_rate(LEARNING_RATE)
  )


@dataclasses.dataclass(frozen=True)
class Variant:
  """One optimizer to time.

  Attributes:
    name: the row label.
    make: builds a fresh ``optax.GradientTransformation``.
    about: one line on what it is.
    step: turns the transformation into the jitted step (default
      :func:`make_step`).
  """

  name: str
  make: Callable[[], optax.GradientTransformation]
  about: str
  step: Callable[[optax.GradientTransformation], Callable] | None = None


def _if_finite(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  return optax.apply_if_finite(tx, max_consecutive_errors=5)


VARIANTS = (
  Variant(
    "balanced_adam",
    lambda: bo.balanced_adam(LEARNING_RATE, BETA, EPS),
    "fused scale_by_balanced_adam, default options",
  ),
  Variant(
    "optax_adam",
    lambda: optax.adam(LEARNING_RATE, b1=BETA, b2=BETA, eps=EPS),
    "optax.adam(b1=b2=beta): same updates, same state",
  ),
  Variant(
    "memory_bound",
    memory_bound_reference,
    "reads p, g, m, v and writes p, m, v; adds only",
  ),
  Variant(
    "call_overhead",
    memory_bound_reference,
    "returns p, m, v untouched: the host's cost of one call with these buffers",
    step=lambda tx: lambda params, state, grads: (params, state),
  ),
  Variant(
    "chain_variance_ema",
    lambda: _chain(bo.variance_ema(BETA)),
    "chain(variance_ema, snr_sign_step, scale_by_learning_rate)",
  ),
  Variant(
    "chain_tied_moments",
    lambda: _chain(bo.tied_moments(BETA)),
    "chain(tied_moments, snr_sign_step, scale_by_learning_rate)",
  ),
  Variant(
    "balanced_adam_bf16",
    lambda: bo.balanced_adam(LEARNING_RATE, BETA, EPS, state_dtype="bfloat16"),
    "balanced_adam(state_dtype='bfloat16')",
  ),
  Variant(
    "balanced_adam_bf16_nearest",
    lambda: bo.balanced_adam(
      LEARNING_RATE, BETA, EPS, state_dtype="bfloat16", stochastic_rounding=False
    ),
    "bfloat16 moments rounded to nearest: the price of stochastic rounding",
  ),
  Variant(
    "balanced_adam_scale_safe",
    lambda: bo.balanced_adam(LEARNING_RATE, BETA, EPS, scale_safe=True),
    "balanced_adam(scale_safe=True): root-form second moment",
  ),
  Variant(
    "balanced_adam_no_guard",
    lambda: bo.balanced_adam(LEARNING_RATE, BETA, EPS, guard_nonfinite=False),
    "balanced_adam(guard_nonfinite=False): the price of the default guard",
  ),
  Variant(
    "if_finite_balanced_adam",
    lambda: _if_finite(bo.balanced_adam(LEARNING_RATE, BETA, EPS)),
    "optax.apply_if_finite(balanced_adam)",
  ),
  Variant(
    "if_finite_optax_adam",
    lambda: _if_finite(optax.adam(LEARNING_RATE, b1=BETA, b2=BETA, eps=EPS)),
    "optax.apply_if_finite(optax.adam)",
  ),
)

# (label, numerator, denominator, threshold): a time ratio per leaf count.
TIME_TARGETS = (
  ("fused balanced_adam <= 1.00x optax.adam", "balanced_adam", "optax_adam", 1.00),
  ("fused balanced_adam <= 1.05x memory bound", "balanced_adam", "memory_bound", 1.05),
  (
    "chain(variance_ema) <= 1.05x fused",
    "chain_variance_ema",
    "balanced_adam",
    1.05,
  ),
  (
    "chain(tied_moments) <= 1.05x fused",
    "chain_tied_moments",
    "balanced_adam",
    1.05,
  ),
  ("bfloat16 state <= 0.80x optax.adam f32", "balanced_adam_bf16", "optax_adam", 0.80),
  (
    "scale_safe <= 1.15x plain",
    "balanced_adam_scale_safe",
    "balanced_adam",
    1.15,
  ),
)
# Ratios shown for information (no target).
INFO_RATIOS = (
  ("no guard / fused (price of the guard)", "balanced_adam_no_guard", "balanced_adam"),
  ("optax.adam / memory bound", "optax_adam", "memory_bound"),
  ("call overhead / memory bound", "call_overhead", "memory_bound"),
  ("bf16 nearest / optax.adam f32", "balanced_adam_bf16_nearest", "optax_adam"),
  ("bf16 stochastic / bf16 nearest",
   "balanced_adam_bf16", "balanced_adam_bf16_nearest"),
  ("if_finite(balanced) / if_finite(optax)",
   "if_finite_balanced_adam", "if_finite_optax_adam"),
  ("if_finite(balanced) / fused", "if_finite_balanced_adam", "balanced_adam"),
)  # fmt: skip


def make_step(tx: optax.GradientTransformation):
  """The step a training loop runs: update, then apply."""

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def leaf_shape(num_params: int, num_leaves: int) -> tuple[int, int]:
  """A 2-D shape (rows, cols) with cols <= 1024 for one of ``num_leaves`` leaves."""
  if num_params % num_leaves:
    raise ValueError(f"--params={num_params} is not divisible by {num_leaves} leaves")
  size = num_params // num_leaves
  cols = min(size, 1024)
  while size % cols:
    cols -= 1
  return size // cols, cols


def tree_bytes(tree: Any, min_size: int = 0) -> int:
  """Sum of ``nbytes`` over array leaves with at least ``min_size`` elements."""
  return int(
    sum(
      x.nbytes
      for x in jax.tree.leaves(tree)
      if hasattr(x, "nbytes") and x.size >= min_size
    )
  )


def _memory(compiled) -> dict[str, Any] | None:
  """The executable's own memory report, or None if the backend gives none."""
  try:
    analysis = compiled.memory_analysis()
  except (NotImplementedError, AttributeError, RuntimeError):
    return None
  if analysis is None:
    return None
  fields = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
    "peak_memory_in_bytes",
  )
  memory = {f: int(getattr(analysis, f)) for f in fields if hasattr(analysis, f)}
  # What must be live at once: inputs, outputs that do not reuse a donated
  # input, and scratch. A backend-independent peak, beside the backend's own.
  memory["live_bytes"] = (
    memory["argument_size_in_bytes"]
    + memory["output_size_in_bytes"]
    - memory["alias_size_in_bytes"]
    + memory["temp_size_in_bytes"]
  )
  return memory


def _compile(variant: Variant, params, grads):
  """Builds ``variant`` afresh and compiles its step.

  Returns:
    ``(jitted, compiled, state, lower_s, compile_s)``: the jitted step (whose
    first call reuses ``compiled``) for the timed loop, since a training loop
    calls a jitted function (jax's C++ dispatch path), not ``compiled``.
  """
  tx = variant.make()
  state = tx.init(params)
  jitted = jax.jit((variant.step or make_step)(tx), donate_argnums=(0, 1))
  start = time.perf_counter()
  lowered = jitted.lower(params, state, grads)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return jitted, compiled, state, lowered_at - start, done - lowered_at


def bench_leaves(
  variants: Sequence[Variant],
  num_params: int,
  num_leaves: int,
  *,
  rounds: int,
  warmup_rounds: int,
  sample_seconds: float,
  compile_repeats: int,
  seed: int,
  dump_hlo: str | None,
) -> dict[str, Any]:
  """Compiles and times every variant at one leaf count, interleaved."""
  rows, cols = leaf_shape(num_params, num_leaves)
  keys = jax.random.split(jax.random.key(seed), 2 * num_leaves)
  base_params = [
    jax.random.normal(k, (rows, cols), jnp.float32) for k in keys[:num_leaves]
  ]
  grads = [jax.random.normal(k, (rows, cols), jnp.float32) for k in keys[num_leaves:]]
  rng = np.random.default_rng(seed)

  jitted, compiled, buffers, results = {}, {}, {}, {}
  lower_s = {v.name: [] for v in variants}
  compile_s = {v.name: [] for v in variants}
  for _ in range(compile_repeats):  # interleaved too: compile time is noisy
    for i in rng.permutation(len(variants)):
      v = variants[i]
      if sum(compile_s[v.name]) > COMPILE_REPEAT_BUDGET_S:
        continue
      jitted[v.name], compiled[v.name], state, lower, comp = _compile(
        v, base_params, grads
      )
      lower_s[v.name].append(lower)
      compile_s[v.name].append(comp)
      if v.name not in buffers:
        buffers[v.name] = ([jnp.array(p, copy=True) for p in base_params], state)
  for v in variants:
    text = compiled[v.name].as_text()
    if dump_hlo:
      os.makedirs(dump_hlo, exist_ok=True)
      path = os.path.join(dump_hlo, f"{v.name}_{num_leaves}leaves.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    params, state = buffers[v.name]
    results[v.name] = {
      "about": v.about,
      "lower_s": float(np.median(lower_s[v.name])),
      "compile_s": float(np.median(compile_s[v.name])),
      "lower_and_compile_s": float(
        np.median(np.add(lower_s[v.name], compile_s[v.name]))
      ),
      "memory": _memory(compiled[v.name]),
      "state_bytes": tree_bytes(state),
      "moment_bytes": tree_bytes(state, min_size=2),
      # Read p, g and the state once, write p and the state once.
      "min_traffic_bytes": 2 * tree_bytes(params)
      + tree_bytes(grads)
      + 2 * tree_bytes(state),
      "hlo": hlo.summarize(text),
    }

  def run(name: str, steps: int) -> float:
    params, state = buffers[name]
    step = jitted[name]
    start = time.perf_counter()
    for _ in range(steps):
      params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    buffers[name] = (params, state)
    return (time.perf_counter() - start) / steps

  # Enough steps per sample that a typical sample lasts >= sample_seconds.
  for v in variants:
    run(v.name, 1)
  typical = float(np.median([run(v.name, 1) for v in variants]))
  steps = max(1, int(np.ceil(sample_seconds / typical)))
  samples = {v.name: [] for v in variants}
  for r in range(warmup_rounds + rounds):
    for i in rng.permutation(len(variants)):
      seconds = run(variants[i].name, steps)
      if r >= warmup_rounds:
        samples[variants[i].name].append(seconds)
  for v in variants:
    results[v.name]["time_s"] = stats.quartiles(samples[v.name])
    results[v.name]["samples_s"] = samples[v.name]
    results[v.name]["effective_gb_per_s"] = (
      results[v.name]["min_traffic_bytes"] / results[v.name]["time_s"]["median"] / 1e9
    )
  return {
    "leaf_shape": [rows, cols],
    "steps_per_sample": steps,
    "variants": results,
  }


def _ratio(leaf_result: dict[str, Any], numer: str, denom: str) -> dict | None:
  variants = leaf_result["variants"]
  if numer not in variants or denom not in variants:
    return None
  return stats.paired_ratio(variants[numer]["samples_s"], variants[denom]["samples_s"])


def _plain_ratio(leaf_result, numer, denom, key: Callable[[dict], float | None]):
  variants = leaf_result["variants"]
  if numer not in variants or denom not in variants:
    return None
  a, b = key(variants[numer]), key(variants[denom])
  if a is None or b is None or not b:
    return None
  return a / b


def peak_bytes(result: dict) -> float | None:
  """The larger of the backend's peak and the live-buffer sum (None: no report).

  Some backends' ``peak_memory_in_bytes`` leaves out scratch buffers (XLA:CPU
  reports the same peak with and without 128 MiB of temp), so the sum of
  arguments, non-aliased outputs and temp bounds it from below.
  """
  memory = result["memory"]
  if memory is None:
    return None
  return max(memory.get("peak_memory_in_bytes", 0), memory["live_bytes"])


def evaluate_targets(by_leaves: dict[str, dict]) -> list[dict[str, Any]]:
  """Each target of the issue with its ratio per leaf count and its verdict.

  A target is MET when it holds at every leaf count. A time ratio is the
  median of per-round ratios; ``within_noise`` flags a miss whose lower
  quartile still meets the threshold.
  """
  targets = []
  for label, numer, denom, threshold in TIME_TARGETS:
    ratios = {n: _ratio(r, numer, denom) for n, r in by_leaves.items()}
    ratios = {n: q for n, q in ratios.items() if q is not None}
    if not ratios:
      continue
    met = all(q["median"] <= threshold for q in ratios.values())
    targets.append(
      {
        "target": label,
        "threshold": threshold,
        "ratio": {n: q["median"] for n, q in ratios.items()},
        "ratio_iqr": {n: [q["q1"], q["q3"]] for n, q in ratios.items()},
        "verdict": "MET" if met else "MISSED",
        "within_noise": (not met)
        and all(q["q1"] <= threshold for q in ratios.values()),
      }
    )
  plain = (
    (
      "bfloat16 moments take <= 0.50x optax.adam's state memory",
      "balanced_adam_bf16",
      "optax_adam",
      0.50,
      lambda r: r["moment_bytes"],
    ),
    (
      "compile time of fused <= optax.adam's",
      "balanced_adam",
      "optax_adam",
      1.00,
      lambda r: r["lower_and_compile_s"],
    ),
    (
      # 0.1%: a few scalar temporaries (the bias correction) do not count.
      "peak memory of fused <= optax.adam's (to 0.1%)",
      "balanced_adam",
      "optax_adam",
      1.001,
      peak_bytes,
    ),
  )
  for label, numer, denom, threshold, key in plain:
    ratios = {n: _plain_ratio(r, numer, denom, key) for n, r in by_leaves.items()}
    ratios = {n: q for n, q in ratios.items() if q is not None}
    if not ratios:
      continue
    met = all(q <= threshold for q in ratios.values())
    targets.append(
      {
        "target": label,
        "threshold": threshold,
        "ratio": ratios,
        "verdict": "MET" if met else "MISSED",
      }
    )
  return targets


def _fmt_bytes(n: float | None) -> str:
  if n is None:
    return "n/a"
  for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return f"{n:.0f}B"


def _table(title: str, corner: str, rows: dict[str, list[str]], leaves) -> list[str]:
  """A titled text table: one row per key, one column per leaf count."""
  header = [corner] + [f"{n} leaves" for n in leaves]
  body = [[name, *cells] for name, cells in rows.items()]
  widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

  def line(row):
    return "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w)
      for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )

  return ["", title, line(header), *(line(row) for row in body)]


def format_report(report: dict[str, Any]) -> str:
  """The tables and verdict lines printed at the end of a run."""
  device = report["device"]
  by_leaves = report["results"]
  leaves = list(by_leaves)
  names = list(next(iter(by_leaves.values()))["variants"])

  def cells(fn):
    return {
      name: [fn(by_leaves[n]["variants"][name]) for n in leaves] for name in names
    }

  def time_cell(r):
    t = r["time_s"]
    return f"{t['median'] * 1e3:.3f} ({t['iqr_rel'] * 100:.0f}%)"

  def hlo_cell(r):
    h = r["hlo"]
    traffic = h["traffic_bytes"] / r["min_traffic_bytes"]
    return f"{h['fusions']}f {h['copies']}c {traffic:.2f}x"

  def memory_cell(r):
    temp = None if r["memory"] is None else r["memory"]["temp_size_in_bytes"]
    return (
      f"{r['lower_and_compile_s']:.2f}s {_fmt_bytes(peak_bytes(r))} "
      f"{_fmt_bytes(temp)} {_fmt_bytes(r['state_bytes'])}"
    )

  ratio_rows = {}
  for label, numer, denom, *_ in TIME_TARGETS + INFO_RATIOS:
    row = []
    for n in leaves:
      q = _ratio(by_leaves[n], numer, denom)
      row.append(
        "-" if q is None else f"{q['median']:.2f} [{q['q1']:.2f},{q['q3']:.2f}]"
      )
    ratio_rows[label] = row

  lines = [
    f"device: {device['platform']} / {device['device_kind']} "
    f"(host {device['cpu_model']}, {device['cpu_cores']} cores), "
    f"jax {device['jax']}, optax {device['optax']}; "
    f"{report['config']['params']} float32 params, "
    f"{report['config']['rounds']} interleaved rounds"
  ]
  lines += _table(
    "step time, ms: median (interquartile range / median)",
    "variant",
    cells(time_cell),
    leaves,
  )
  lines += _table(
    "fusions f, copies c, HLO traffic / least traffic (28 B/param in f32)",
    "variant",
    cells(hlo_cell),
    leaves,
  )
  lines += _table(
    "lower+compile time, peak memory, temp memory, optimizer state",
    "variant",
    cells(memory_cell),
    leaves,
  )
  if any(r["variants"][names[0]]["memory"] is None for r in by_leaves.values()):
    lines.append("(this backend gives no memory_analysis(): memory is n/a)")
  lines += _table(
    "time ratios: median of per-round ratios [q1, q3]", "ratio", ratio_rows, leaves
  )
  lines += ["", "targets"]
  for t in report["targets"]:
    ratios = ", ".join(f"{n}: {q:.2f}x" for n, q in t["ratio"].items())
    noise = " (within noise)" if t.get("within_noise") else ""
    lines.append(f"{t['verdict']:<7}{noise} {t['target']}  [{ratios} leaves]")
  return "\n".join(lines)


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
