"""Judging a step benchmark: each target's ratio per leaf count and verdict."""

from collections.abc import Callable
from typing import Any

from benchmarks import stats

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
    "int8 state <= 1.30x bfloat16 state",
    "balanced_adam_int8",
    "balanced_adam_bf16",
    1.30,
  ),
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
  ("int8 state / optax.adam f32 (0.75x on an accelerator)",
   "balanced_adam_int8", "optax_adam"),
  ("int4 state / bfloat16 state", "balanced_adam_int4", "balanced_adam_bf16"),
)  # fmt: skip


def ratio(leaf_result: dict[str, Any], numer: str, denom: str) -> dict | None:
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
    ratios = {n: ratio(r, numer, denom) for n, r in by_leaves.items()}
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
