r"""Memory of the low-bit state: bytes per parameter and the step's peak.

Compile-only (nothing is trained or run), so it is the same on any backend
and takes about a minute on CPU. Two tables:

1. **State.** For a 2^24-parameter leaf set (4 leaves of 2^22), the GPT
   trainer's default model and the ViT trainer's (params from
   ``nnx.eval_shape``, nothing allocated), the bytes of every array of the
   optimizer state (:func:`benchmarks.lowbit_common.optimizer`, weight decay
   and learning rate included) per parameter, and over ``optax.adam``'s
   state. ``all`` counts every leaf; ``large`` only the leaves of at least
   ``min_size`` elements (4096), the ones a low-bit store quantizes.
2. **Peak.** The jitted step ``tx.update`` + ``optax.apply_updates`` with
   params and state donated, compiled at 1 leaf of 2^24 and at 64 leaves:
   ``peak = max(backend peak, arguments + outputs - aliased + temp)`` from
   ``compiled.memory_analysis()`` (donated outputs alias their inputs, so
   they are counted once; XLA:CPU's own peak leaves temp out), over
   ``optax.adam``'s.

Targets (issue 23), on the large leaves: int8 <= 2.05 bytes/param and <=
0.26x optax.adam's state, int4 <= 1.07 and <= 0.14x; peak <= optax.adam's.

Usage, from the repository root::

  python -m benchmarks.lowbit_memory              # ~1 minute on CPU
  python -m benchmarks.lowbit_memory --quick      # 2^18 params, 4 leaves: seconds
"""

import argparse
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import lowbit_common, machine, step_measure, step_targets

STORES = ("float32", "bfloat16", "int8", "int4", "bnb")
# (store, bytes per param, times optax.adam's state) on the large leaves.
STATE_TARGETS = {"int8": (2.05, 0.26), "int4": (1.07, 0.14)}
LEARNING_RATE = 1e-3
BETA = 0.95


def leaf_set(num_params: int, num_leaves: int) -> list[jax.ShapeDtypeStruct]:
  """``num_leaves`` float32 leaves of ``step_measure.leaf_shape``'s shape."""
  shape = step_measure.leaf_shape(num_params, num_leaves)
  return [jax.ShapeDtypeStruct(shape, jnp.float32)] * num_leaves


def gpt_params() -> Any:
  """Abstract params of the GPT trainer's default model (bundled corpus)."""
  from examples.gpt import input_pipeline, train
  from examples.gpt.configs import default

  config = default.get_config()
  text = input_pipeline.read_text(config.data)
  vocab = input_pipeline.make_corpus(text, config.val_fraction).vocab_size
  model = nnx.eval_shape(lambda: train.make_model(config, vocab))
  return nnx.state(model, nnx.Param)


def vit_params() -> Any:
  """Abstract params of the ViT trainer's default model (digits)."""
  from examples.vit import input_pipeline, train
  from examples.vit.configs import default

  config = default.get_config()
  task = train.make_task(config, input_pipeline.load(config.data))
  return nnx.state(nnx.eval_shape(task.make_model), nnx.Param)


def reference(store: str) -> optax.GradientTransformation:
  if store == "optax_adam":
    return optax.adam(LEARNING_RATE, b1=BETA, b2=BETA)
  return lowbit_common.optimizer(store, LEARNING_RATE, BETA)


def _nbytes(tree: Any) -> int:
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def state_bytes(store: str, params: Any) -> int:
  """Bytes of every array of ``store``'s state for ``params`` (abstract)."""
  return _nbytes(jax.eval_shape(reference(store).init, params))


def _num_params(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def state_rows(params: Any) -> dict[str, Any]:
  """Per store: bytes, bytes per param and ratio to optax.adam, all and large."""
  leaves = jax.tree.leaves(params)
  large = [p for p in leaves if math.prod(p.shape) >= lowbit_common.MIN_SIZE]
  sets = {"all": params, "large": large}
  counts = {k: _num_params(v) for k, v in sets.items()}
  adam = {k: state_bytes("optax_adam", v) for k, v in sets.items()}
  rows = {}
  for store in STORES:
    row = {}
    for k, tree in sets.items():
      if not counts[k]:
        continue
      n = state_bytes(store, tree)
      row[k] = {
        "bytes": n,
        "bytes_per_param": n / counts[k],
        "vs_optax_adam": n / adam[k],
      }
    rows[store] = row
  return {
    "params": counts["all"],
    "leaves": len(leaves),
    "large_params": counts["large"],
    "large_leaves": len(large),
    "optax_adam_bytes": adam["all"],
    "stores": rows,
  }


def peak(store: str, num_params: int, num_leaves: int) -> dict[str, Any]:
  """The donated step's memory report and peak for one store."""
  tx = reference(store)
  params = leaf_set(num_params, num_leaves)
  state = jax.eval_shape(tx.init, params)
  step = jax.jit(step_measure.make_step(tx), donate_argnums=(0, 1))
  memory = step_measure.memory_report(step.lower(params, state, params).compile())
  return {"memory": memory, "peak_bytes": step_targets.peak_bytes({"memory": memory})}


def peak_rows(num_params: int, leaf_counts: Sequence[int]) -> dict[str, Any]:
  rows = {}
  for n in leaf_counts:
    by_store = {s: peak(s, num_params, n) for s in ("optax_adam", *STORES)}
    adam = by_store["optax_adam"]["peak_bytes"]
    for r in by_store.values():
      r["vs_optax_adam"] = None if not adam else r["peak_bytes"] / adam
    rows[str(n)] = by_store
  return rows


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
  """Each target with its measured values and MET / MISSED."""
  out = []
  for store, (per_param, ratio) in STATE_TARGETS.items():
    values = {
      name: report["state"][name]["stores"][store]["large"]
      for name in report["state"]
      if "large" in report["state"][name]["stores"][store]
    }
    met = all(
      v["bytes_per_param"] <= per_param and v["vs_optax_adam"] <= ratio
      for v in values.values()
    )
    out.append(
      {
        "target": f"{store} state <= {per_param} B/param and <= {ratio}x "
        "optax.adam (leaves >= min_size)",
        "values": {
          k: [v["bytes_per_param"], v["vs_optax_adam"]] for k, v in values.items()
        },
        "verdict": "MET" if met else "MISSED",
      }
    )
  for store in ("int8", "int4"):
    ratios = {n: r[store]["vs_optax_adam"] for n, r in report["peak"].items()}
    met = all(q is not None and q <= 1.0 for q in ratios.values())
    out.append(
      {
        "target": f"{store} step peak memory <= optax.adam's",
        "values": ratios,
        "verdict": "MET" if met else "MISSED",
      }
    )
  return out


def _mib(n: float) -> str:
  return f"{n / 2**20:.1f}M"


def _cell(value: float | list[float]) -> str:
  if isinstance(value, list):
    return "/".join(f"{x:.3f}" for x in value)
  return f"{value:.3f}"


def format_report(report: dict[str, Any]) -> str:
  lines = [
    "state bytes: per param and x optax.adam's state, every leaf (all) and "
    f"leaves >= {lowbit_common.MIN_SIZE} elements (large)"
  ]
  header = f"{'params':<16}{'store':<10}{'all B/p':>9}{'x adam':>8}"
  lines.append(header + f"{'large B/p':>11}{'x adam':>8}{'total':>10}")
  for name, s in report["state"].items():
    for store, row in s["stores"].items():
      large = row.get("large")
      cells = f"{large['bytes_per_param']:11.3f}{large['vs_optax_adam']:8.3f}"
      lines.append(
        f"{name:<16}{store:<10}{row['all']['bytes_per_param']:9.3f}"
        f"{row['all']['vs_optax_adam']:8.3f}"
        + (cells if large else f"{'-':>11}{'-':>8}")
        + f"{_mib(row['all']['bytes']):>10}"
      )
    lines.append(
      f"{'':<16}({s['params']} params in {s['leaves']} leaves; "
      f"{s['large_params']} in {s['large_leaves']} large leaves)"
    )
  lines += [
    "",
    "step peak = max(backend peak, arguments + outputs - aliased + temp), "
    f"{report['config']['peak_params']} params, donated",
    f"{'leaves':<8}{'store':<12}{'args':>9}{'temp':>9}{'peak':>9}{'x adam':>8}",
  ]
  for n, by_store in report["peak"].items():
    for store, r in by_store.items():
      m = r["memory"] or {}
      lines.append(
        f"{n:<8}{store:<12}{_mib(m.get('argument_size_in_bytes', 0)):>9}"
        f"{_mib(m.get('temp_size_in_bytes', 0)):>9}{_mib(r['peak_bytes'] or 0):>9}"
        f"{r['vs_optax_adam'] or float('nan'):8.3f}"
      )
  lines += ["", "targets"]
  for t in report["targets"]:
    values = ", ".join(f"{k}: {_cell(v)}" for k, v in t["values"].items())
    lines.append(f"{t['verdict']:<7} {t['target']}  [{values}]")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--quick",
    action="store_true",
    help="2^18 params, no models, peak at 1 and 4 leaves",
  )
  parser.add_argument("--out", default="benchmarks/results/lowbit_memory.json")
  args = parser.parse_args(argv)
  num_params = 2**18 if args.quick else 2**24
  state = {f"2^{num_params.bit_length() - 1} in 4": state_rows(leaf_set(num_params, 4))}
  if not args.quick:
    state["gpt default"] = state_rows(gpt_params())
    state["vit default"] = state_rows(vit_params())
  report = {
    "device": machine.describe(),
    "config": {
      "beta": BETA,
      "min_size": lowbit_common.MIN_SIZE,
      "peak_params": num_params,
      "quick": args.quick,
    },
    "state": state,
    "peak": peak_rows(num_params, (1, 4) if args.quick else (1, 64)),
  }
  report["targets"] = verdicts(report)
  print(format_report(report))
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.out}")
  return report


if __name__ == "__main__":
  main()
