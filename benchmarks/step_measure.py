"""Measuring one optimizer step: the variants, their compiled steps and timings.

Every variant's step is ``tx.update`` then ``optax.apply_updates``, jitted with
params and state donated; :func:`bench_leaves` compiles each (a median over
repeats), reads its memory report and optimized HLO, and times all variants
interleaved so that drift in how busy the machine is hits them alike. The
targets they are judged by are in :mod:`benchmarks.step_targets`, the tables in
:mod:`benchmarks.step_report`, the command line in :mod:`benchmarks.step`.
"""

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo
from benchmarks import hlo, lowbit_common, stats

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
    "balanced_adam_int8",
    lambda: lowbit_common.optimizer("int8", LEARNING_RATE, BETA),
    "balanced_adam(state_dtype='int8'): 2.05 B/param",
  ),
  Variant(
    "balanced_adam_int4",
    lambda: lowbit_common.optimizer("int4", LEARNING_RATE, BETA),
    "balanced_adam(state_dtype='int4'): 1.05 B/param",
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


def memory_report(compiled) -> dict[str, Any] | None:
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
      "memory": memory_report(compiled[v.name]),
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
