r"""The low-bit step of this checkout against another revision's, in one process.

Loads ``balanced_optax/lowbit.py`` as it is at ``--base`` (a git revision) next
to the current one and times their jitted, donated steps (``tx.update`` +
``optax.apply_updates``, ``--params`` float32 params in ``--leaves`` equal
leaves) interleaved with the bfloat16-state step and ``optax.adam`` (round
robin in a fresh random order each round, so load drift hits them alike).
Prints medians, medians of per-round ratios, compile times and the step's
temp and peak memory (``compiled.memory_analysis()``), and the verdict of
the current step against ``--base``'s.

Usage, from the repository root::

  python -m benchmarks.lowbit_step_compare --base=lowbit-bench
  python -m benchmarks.lowbit_step_compare --base=HEAD~3 --leaves=1 --modes=int8
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo
from balanced_optax import lowbit
from benchmarks import machine
from benchmarks.step_measure import BETA, LEARNING_RATE, leaf_shape, make_step


def load_base(revision: str):
  """``balanced_optax/lowbit.py`` at ``revision``, imported as its own module."""
  source = subprocess.run(
    ["git", "show", f"{revision}:balanced_optax/lowbit.py"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("lowbit_base", f.name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  os.unlink(f.name)
  return module


def _lowbit(module, mode: str) -> optax.GradientTransformation:
  return optax.chain(
    module.scale_by_balanced_adam_lowbit(BETA, state_dtype=mode),
    optax.scale_by_learning_rate(LEARNING_RATE),
  )


def compare(base, mode: str, num_params: int, leaves: int, rounds: int) -> dict:
  """Times and memory of the four steps at one leaf count."""
  shape = leaf_shape(num_params, leaves)
  variants = {
    "optax_adam": optax.adam(LEARNING_RATE, b1=BETA, b2=BETA),
    "bfloat16": bo.balanced_adam(LEARNING_RATE, BETA, state_dtype="bfloat16"),
    "base": _lowbit(base, mode),
    "current": _lowbit(lowbit, mode),
  }
  keys = jax.random.split(jax.random.key(0), 2 * leaves)

  def tree(offset):
    return {
      f"w{i:04d}": jax.random.normal(keys[offset + i], shape) for i in range(leaves)
    }

  params, grads = tree(0), tree(leaves)
  runs, out = {}, {}
  for name, tx in variants.items():
    state = tx.init(params)
    start = time.perf_counter()
    step = jax.jit(make_step(tx), donate_argnums=(0, 1))
    compiled = step.lower(params, state, grads).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    peak = (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes
    )
    out[name] = {"compile_s": seconds, "temp_bytes": memory.temp_size_in_bytes}
    out[name]["peak_bytes"] = peak
    p = jax.tree.map(jnp.copy, params)
    for _ in range(2):
      p, state = compiled(p, state, grads)
    jax.block_until_ready(p)
    runs[name] = [compiled, p, state]
  times = {name: [] for name in variants}
  rng = np.random.default_rng(0)
  for _ in range(rounds):
    for name in rng.permutation(list(variants)):
      compiled, p, state = runs[name]
      start = time.perf_counter()
      p, state = compiled(p, state, grads)
      jax.block_until_ready((p, state))
      times[name].append(time.perf_counter() - start)
      runs[name][1:] = [p, state]
  t = {name: np.asarray(ts) for name, ts in times.items()}
  for name in variants:
    out[name]["ms"] = float(np.median(t[name]) * 1e3)
    out[name]["peak_vs_optax_adam"] = (
      out[name]["peak_bytes"] / out["optax_adam"]["peak_bytes"]
    )
  out["ratios"] = {
    "current/base": float(np.median(t["current"] / t["base"])),
    "current/bfloat16": float(np.median(t["current"] / t["bfloat16"])),
    "base/bfloat16": float(np.median(t["base"] / t["bfloat16"])),
    "current/optax_adam": float(np.median(t["current"] / t["optax_adam"])),
  }
  return out


def format_row(mode: str, leaves: int, r: dict[str, Any]) -> str:
  q = r["ratios"]
  return (
    f"{mode} {leaves:4d} leaves: ms adam {r['optax_adam']['ms']:.1f} bf16 "
    f"{r['bfloat16']['ms']:.1f} base {r['base']['ms']:.1f} current "
    f"{r['current']['ms']:.1f} | current/base {q['current/base']:.2f}x, "
    f"/bf16 {q['current/bfloat16']:.2f}x (base {q['base/bfloat16']:.2f}x) | "
    f"compile s base {r['base']['compile_s']:.1f} current "
    f"{r['current']['compile_s']:.1f} | peak x adam base "
    f"{r['base']['peak_vs_optax_adam']:.3f} current "
    f"{r['current']['peak_vs_optax_adam']:.3f}"
  )


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", default="lowbit-bench", help="git revision")
  parser.add_argument("--params", type=int, default=2**24)
  parser.add_argument("--leaves", default="1,64")
  parser.add_argument("--modes", default="int8,int4")
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument(
    "--out", default="benchmarks/results/lowbit_step_compare_cpu.json"
  )
  args = parser.parse_args(argv)
  base = load_base(args.base)
  results: dict[str, Any] = {
    "device": machine.describe(),
    "config": vars(args),
    "results": {},
  }
  lines = []
  for mode in args.modes.split(","):
    for leaves in (int(n) for n in args.leaves.split(",")):
      r = compare(base, mode, args.params, leaves, args.rounds)
      results["results"][f"{mode}/{leaves}"] = r
      lines.append(format_row(mode, leaves, r))
      print(lines[-1], flush=True)
  faster = all(r["ratios"]["current/base"] < 1 for r in results["results"].values())
  print(("FASTER" if faster else "NOT FASTER everywhere") + f" than {args.base}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
