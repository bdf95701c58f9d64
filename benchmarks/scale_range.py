r"""How far a constant gradient scale can go before each optimizer breaks.

For each scale c in 1e-30 .. 1e30, every optimizer runs ``--steps`` steps on
a fixed float32 gradient stream multiplied by c, and the result is the
relative deviation of its updates from the run at c = 1,

    ||u(c g) - u(g)|| / ||u(g)||      (``inf`` when an update is not finite).

With eps = 0 Adam is invariant to c in exact arithmetic, so any deviation is
float32 arithmetic failing: g^2 underflows below |g| ~ 1e-19 and overflows
above ~1e19. ``scale_safe=True`` never forms g^2 (it keeps sqrt(v), updated
with ``hypot``) and stays invariant over the whole range. optax.adam with its
default eps = 1e-8 is shown too: there the eps floor, not arithmetic, makes
small gradients' updates shrink.

Usage, from the repository root::

  python -m benchmarks.scale_range
  python -m benchmarks.scale_range --steps=100

``benchmarks.step`` runs it too and keeps its rows in its JSON.
"""

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo

SCALES = tuple(10.0**e for e in range(-30, 31, 5))
BETA = 0.95
# Deviation at or below this counts as invariant (the tests assert it).
TOLERANCE = 1e-5


def optimizers() -> dict[str, optax.GradientTransformation]:
  """The rows: balanced Adam scale-safe and plain, and optax.adam."""
  return {
    "balanced_adam(eps=0, scale_safe=True)": bo.balanced_adam(
      1.0, BETA, eps=0.0, scale_safe=True
    ),
    "balanced_adam(eps=0)": bo.balanced_adam(1.0, BETA, eps=0.0),
    "optax.adam(b1=b2, eps=0)": optax.adam(1.0, BETA, BETA, eps=0.0),
    "optax.adam(b1=b2), eps=1e-8": optax.adam(1.0, BETA, BETA),
  }


def _run_stream(tx: optax.GradientTransformation):
  """A jitted function: gradient stream [T, D] -> all of tx's updates [T, D]."""

  @jax.jit
  def updates(grads_TxD):
    params = jnp.zeros(grads_TxD.shape[1:], grads_TxD.dtype)

    def step(state, g):
      u, state = tx.update(g, state, params)
      return state, u

    return jax.lax.scan(step, tx.init(params), grads_TxD)[1]

  return updates


def relative_deviation(
  tx: optax.GradientTransformation,
  grads_TxD: jax.Array,
  scales: Sequence[float],
) -> list[float]:
  """||u(c g) - u(g)|| / ||u(g)|| over the whole stream per scale c (inf if
  an update is not finite)."""
  updates = _run_stream(tx)
  want = np.asarray(updates(grads_TxD), np.float64)
  # Scaled in float64 and rounded once to float32, so 1e-30 * g is a float32
  # gradient, not an underflow of the product.
  grads64 = np.asarray(grads_TxD, np.float64)
  deviations = []
  for c in scales:
    scaled = jnp.asarray(grads64 * c, jnp.float32)
    got = np.asarray(updates(scaled), np.float64)
    finite = np.all(np.isfinite(got))
    deviations.append(
      float(np.linalg.norm(got - want) / np.linalg.norm(want))
      if finite
      else float("inf")
    )
  return deviations


def run(steps: int = 30, size: int = 256, seed: int = 0) -> dict[str, dict]:
  """Deviation per optimizer and scale, and the range where it is <= TOLERANCE."""
  rng = np.random.default_rng(seed)
  # A noisy stationary stream: mean per coordinate plus noise.
  grads_TxD = jnp.asarray(
    rng.standard_normal(size) + rng.standard_normal((steps, size)), jnp.float32
  )
  rows = {}
  for name, tx in optimizers().items():
    values = relative_deviation(tx, grads_TxD, SCALES)
    deviation = {f"{c:.0e}": d for c, d in zip(SCALES, values, strict=True)}
    ok = [c for c in SCALES if deviation[f"{c:.0e}"] <= TOLERANCE]
    rows[name] = {
      "deviation": deviation,
      "invariant_range": [min(ok), max(ok)] if ok else None,
      "invariant_everywhere": len(ok) == len(SCALES),
    }
  return rows


def format_rows(rows: dict[str, dict]) -> str:
  """A table: one row per optimizer, one column per scale."""
  scales = list(next(iter(rows.values()))["deviation"])
  width = max(map(len, rows))
  lines = [
    f"relative deviation of the updates from c = 1 (float32, {BETA=}); "
    f"'ok' is <= {TOLERANCE:.0e}",
    "scale c".ljust(width) + "".join(s.rjust(8) for s in scales),
  ]
  for name, row in rows.items():
    cells = []
    for s in scales:
      d = row["deviation"][s]
      cells.append("ok" if d <= TOLERANCE else ("inf" if np.isinf(d) else f"{d:.0e}"))
    lines.append(name.ljust(width) + "".join(c.rjust(8) for c in cells))
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--size", type=int, default=256)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  rows = run(args.steps, args.size)
  print(format_rows(rows))
  return rows


if __name__ == "__main__":
  main()
