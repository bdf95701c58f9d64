r"""The measurements behind the 8-bit and 4-bit state (docs/lowbit.md).

Three tables, one command:

1. **Tracking.** Synthetic gradient streams (``--coords`` coordinates in
   blocks, each ``g = mu_t + sigma noise`` with a slowly drifting mean and
   scales spread over two decades within a block; ``mixed``: a tenth of the
   coordinates carry signal, ``snr ~ 1``, the rest ``snr ~ 0.1``; ``noise``:
   all ``snr ~ 0.1``) run through balanced Adam with float32 state and with
   each candidate store. Columns: ``dU``, the RMS gap between the candidate's
   update and float32's, over float32's own RMS error against the true
   direction ``mu / sqrt(mu^2 + sigma^2)`` (0 is lossless; 1 doubles the
   error variance); ``lnv``, the RMS of ``log(v / v_float32)``.
2. **Training.** A noisy linear regression (256 x 64 weights, feature
   variances over two decades; exact expected loss) and a teacher-student
   MLP (32-128-128-10, cross-entropy), 3 seeds, cosine schedule: final loss
   relative to float32 state, and float32's spread over seeds.
3. **Speed.** One jitted, donated step on a 1024 x 2048 leaf.

The candidates are simulated (each step decodes, updates in float32, computes
the update from the fresh moments, then re-rounds the stored values onto a
table of levels) except the rows marked ``lib``, which run
:func:`balanced_optax.lowbit.scale_by_balanced_adam_lowbit` itself. Names:
``r<bits><code>`` stores the ratio ``m / sqrt(v)`` (``lin`` linear, ``quad``
levels ``(k/K)^2``, ``/s`` with a per-block scale), ``q<bits>`` stores
``sqrt(v)`` on a log code under the block maximum (``log<S>``: ``S`` levels
per octave), ``bnb`` / ``ao4`` are bitsandbytes- and torchao-style references
(``m`` and ``v`` each block-quantized on a dynamic-exponent map, ``v`` on a
linear map for ``ao4``), ``rtn`` rounds to nearest, everything else
stochastically; ``to0`` lets a ``sqrt(v)`` under the lowest level round down to 0
(the others round it up to that level); ``b<n>`` is the block size (default 64).

Usage, from the repository root::

  python -m benchmarks.lowbit_codes            # about 12 minutes on 2 CPU cores
  python -m benchmarks.lowbit_codes --quick    # seconds
"""

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo
from balanced_optax import lowbit

BETAS = (0.9, 0.99, 0.999)


# ---- Tables of levels (normalized: the block's scale maps to 1).


# Levels are tuples: a Store is a static (hashable) argument of the jitted runs.


def linear_levels(bits: int) -> tuple[float, ...]:
  k = 2 ** (bits - 1) - 1
  return tuple(np.arange(-k, k + 1) / k)


def quad_levels(bits: int) -> tuple[float, ...]:
  a = np.asarray(linear_levels(bits))
  return tuple(np.sign(a) * a * a)


def log_levels(bits: int, per_octave: float) -> tuple[float, ...]:
  """0 and 2^(-j / per_octave), j = 0 .. 2^bits - 2."""
  j = np.arange(2**bits - 1)[::-1]
  return (0.0, *(2.0 ** (-j / per_octave)))


def dynamic_levels(bits: int, signed: bool) -> tuple[float, ...]:
  """A dynamic-exponent map: one more point per decade at each larger decade
  (in the spirit of bitsandbytes' 8-bit map; built here, not copied)."""
  n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
  per_decade = []
  while sum(per_decade) < n:
    per_decade.append(min(2 ** len(per_decade), n - sum(per_decade)))
  mags = []
  for i, k in enumerate(per_decade):
    edges = np.linspace(0.1, 1.0, k + 1)
    points = (edges[:-1] + edges[1:]) / 2 if k > 1 else np.array([1.0])
    mags.extend(points * 10.0 ** (i - len(per_decade) + 1))
  mags = np.sort(mags) / np.max(mags)
  levels = np.concatenate([-mags[::-1], [0.0], mags]) if signed else np.r_[0.0, mags]
  return tuple(np.unique(levels))


def no_zero_linear(bits: int) -> tuple[float, ...]:
  return tuple(np.arange(1, 2**bits + 1) / 2**bits)


# ---- Simulated stores.


def _round(x, levels, u, *, stochastic, square=False, clamp_low=False):
  """x (normalized) onto ``levels``: unbiased in x (or x^2) or to nearest."""
  lv = jnp.asarray(levels, jnp.float32)
  x = jnp.clip(x, lv[0], lv[-1])
  i = jnp.clip(jnp.searchsorted(lv, x, side="right") - 1, 0, lv.shape[0] - 2)
  lo, hi = lv[i], lv[i + 1]
  p = (x * x - lo * lo) / (hi * hi - lo * lo) if square else (x - lo) / (hi - lo)
  out = jnp.where(u < p if stochastic else p >= 0.5, hi, lo)
  if clamp_low:  # A nonzero value never rounds down to 0.
    out = jnp.where((x > 0) & (out == 0), lv[1], out)
  return out


def _block_max(x, block):
  return jnp.repeat(jnp.max(jnp.abs(x.reshape(-1, block)), axis=1), block)


class Store(NamedTuple):
  """A candidate: how (m, v) are re-rounded after each step."""

  name: str
  kind: str  # "ratio": (r, sqrt v); "moments": (m, v); "lib": the library
  first: Any = None  # levels of r (or m)
  second: Any = None  # levels of sqrt(v) (or v)
  block: int = 64
  ratio_scale: bool = True
  stochastic: bool = True
  round_up_low: bool = True  # sqrt(v) below the lowest level: up, not to 0
  mode: str = "int8"  # for "lib"


def make_store(store: Store) -> Callable:
  sr, block = store.stochastic, store.block

  if store.kind == "ratio":

    def apply(m, v, key):
      k1, k2 = jax.random.split(key)
      q = jnp.sqrt(v)
      top = _block_max(q, block)
      top = jnp.where(top > 0, top, 1)
      q = top * _round(
        q / top,
        store.second,
        jax.random.uniform(k2, q.shape),
        stochastic=sr,
        square=True,
        clamp_low=store.round_up_low,
      )
      r = jnp.where(v > 0, m / jnp.sqrt(jnp.where(v > 0, v, 1)), 0)
      scale = _block_max(r, block) if store.ratio_scale else jnp.ones_like(r)
      scale = jnp.where(scale > 0, scale, 1)
      u = jax.random.uniform(k1, r.shape)
      r = scale * _round(r / scale, store.first, u, stochastic=sr)
      return r * q, q * q

    return apply

  def apply_moments(m, v, key):
    k1, k2 = jax.random.split(key)
    out = []
    for x, levels, k in ((m, store.first, k1), (v, store.second, k2)):
      scale = _block_max(x, block)
      scale = jnp.where(scale > 0, scale, 1)
      u = jax.random.uniform(k, x.shape)
      out.append(scale * _round(x / scale, levels, u, stochastic=sr))
    return tuple(out)

  return apply_moments


INT8_STORES = (
  Store(
    "bnb8 rtn",
    "moments",
    dynamic_levels(8, True),
    dynamic_levels(8, False),
    block=256,
    stochastic=False,
  ),
  Store(
    "bnb8 sr", "moments", dynamic_levels(8, True), dynamic_levels(8, False), block=256
  ),
  Store(
    "r8lin q8log16", "ratio", linear_levels(8), log_levels(8, 16), ratio_scale=False
  ),
  Store("r8lin/s q8log16", "ratio", linear_levels(8), log_levels(8, 16)),
  Store("r8quad/s q8log16", "ratio", quad_levels(8), log_levels(8, 16)),
  Store("r10lin/s q6log8", "ratio", linear_levels(10), log_levels(6, 8)),
  Store(
    "r10quad q6log8", "ratio", quad_levels(10), log_levels(6, 8), ratio_scale=False
  ),
  Store("r11quad/s q5log4", "ratio", quad_levels(11), log_levels(5, 4)),
  Store("r10quad/s q6log8 b32", "ratio", quad_levels(10), log_levels(6, 8), block=32),
  Store("r10quad/s q6log8 b256", "ratio", quad_levels(10), log_levels(6, 8), block=256),
  Store(
    "r10quad/s q6log8 rtn", "ratio", quad_levels(10), log_levels(6, 8), stochastic=False
  ),
  Store(
    "r10quad/s q6log8 to0",
    "ratio",
    quad_levels(10),
    log_levels(6, 8),
    round_up_low=False,
  ),
  Store("r10quad/s q6log8", "ratio", quad_levels(10), log_levels(6, 8)),
  Store("lib int8", "lib", mode="int8"),
)
INT4_STORES = (
  Store(
    "ao4 rtn",
    "moments",
    dynamic_levels(4, True),
    no_zero_linear(4),
    block=128,
    stochastic=False,
  ),
  Store("r4lin q4log1", "ratio", linear_levels(4), log_levels(4, 1), ratio_scale=False),
  Store("r4quad/s q4log2", "ratio", quad_levels(4), log_levels(4, 2)),
  Store("r5quad/s q3log1", "ratio", quad_levels(5), log_levels(3, 1)),
  Store("r7quad/s q1", "ratio", quad_levels(7), log_levels(1, 1)),
  Store("r6quad/s q2log2/3", "ratio", quad_levels(6), log_levels(2, 2 / 3)),
  Store("r6quad/s q2log1/2", "ratio", quad_levels(6), log_levels(2, 1 / 2)),
  Store("lib int4", "lib", mode="int4"),
)


# ---- 1. Tracking synthetic streams.


def stream(n, key, signal_fraction):
  keys = jax.random.split(key, 6)
  sigma = 10.0 ** jax.random.uniform(keys[0], (n,), minval=-1, maxval=1)
  signal = jax.random.uniform(keys[1], (n,)) < signal_fraction
  snr = jnp.where(signal, 1.0, 0.1) * jax.random.normal(keys[2], (n,))
  amplitude = jnp.where(signal, 0.5, 0.1) * jax.random.uniform(keys[3], (n,))
  period = jax.random.uniform(keys[4], (n,), minval=2000, maxval=20000)
  phase = jax.random.uniform(keys[5], (n,), maxval=2 * np.pi)
  return sigma, snr, amplitude, period, phase


def _lib_transform(store: Store, beta):
  return lowbit.scale_by_balanced_adam_lowbit(beta, state_dtype=store.mode, min_size=0)


@functools.partial(jax.jit, static_argnames=("store", "steps"))
def track(beta, params, *, store: Store, steps: int):
  """Sums over the last half of ``steps``: (gap^2, float32 error^2, lnv^2)."""
  sigma, snr, amplitude, period, phase = params
  n = sigma.shape[0]
  key = jax.random.key(1)
  lib = store.kind == "lib"
  tx = _lib_transform(store, beta) if lib else None
  apply = None if lib else make_store(store)
  reference = optax.scale_by_adam(b1=beta, b2=beta)

  def body(carry, t):
    ref_state, state, acc = carry
    key_g, key_s = jax.random.split(jax.random.fold_in(key, t))
    time_ = t.astype(jnp.float32)
    mean = sigma * (snr + amplitude * jnp.sin(2 * np.pi * time_ / period + phase))
    g = mean + sigma * jax.random.normal(key_g, (n,))
    u_float, ref_state = reference.update(g, ref_state)
    if lib:
      u, state = tx.update(g, state)
      v = lowbit.moments(state)[1]
    else:
      m = beta * state[0] + (1 - beta) * g
      v = beta * state[1] + (1 - beta) * g * g
      c = 1 - beta ** (time_ + 1)
      u = (m / c) / (jnp.sqrt(v / c) + 1e-8)
      state = apply(m, v, key_s)
      v = state[1]
    truth = mean / jnp.sqrt(mean * mean + sigma * sigma)
    weight = (t >= steps // 2).astype(jnp.float32)
    acc = acc + weight * jnp.stack(
      [
        jnp.mean((u - u_float) ** 2),
        jnp.mean((u_float - truth) ** 2),
        jnp.mean(jnp.log(jnp.maximum(v, 1e-38) / ref_state.nu) ** 2),
      ]
    )
    return (ref_state, state, acc), None

  zeros = jnp.zeros(n)
  state = tx.init(zeros) if lib else (zeros, zeros)
  init = (reference.init(zeros), state, jnp.zeros(3))
  (_, _, acc), _ = jax.lax.scan(body, init, jnp.arange(steps))
  return acc


def tracking_table(stores: Sequence[Store], streams: Sequence[str], coords, quick):
  rows = []
  for name in streams:
    params = stream(coords, jax.random.key(0), 0.1 if name == "mixed" else 0.0)
    for store in stores:
      row = {"stream": name, "store": store.name}
      for beta in BETAS:
        steps = 200 if quick else max(1000, int(3 / (1 - beta)))
        gap2, err2, lnv2 = np.asarray(
          track(jnp.float32(beta), params, store=store, steps=steps)
        )
        row[beta] = (float(np.sqrt(gap2 / err2)), float(np.sqrt(lnv2 / (steps // 2))))
      rows.append(row)
      cells = "  ".join(f"{row[b][0]:6.3f} {row[b][1]:6.3f}" for b in BETAS)
      print(f"  {name:6s} {store.name:24s} {cells}", flush=True)
  return rows


# ---- 2. Training problems.


class Problem(NamedTuple):
  init: Callable
  loss: Callable  # (params, batch) -> scalar
  batch: Callable  # key -> batch
  evaluate: Callable  # params -> scalar
  learning_rate: float


def regression(d_in=256, d_out=64, batch=16, noise=1.0) -> Problem:
  variance = jnp.logspace(-1, 1, d_in)
  w_star = jax.random.normal(jax.random.key(99), (d_in, d_out)) / jnp.sqrt(d_in)

  def make_batch(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (batch, d_in)) * jnp.sqrt(variance)
    return x, x @ w_star + noise * jax.random.normal(k2, (batch, d_out))

  def loss(p, b):
    x, y = b
    return 0.5 * jnp.mean(jnp.sum((x @ p["w"] - y) ** 2, -1))

  def evaluate(p):  # The exact expected loss.
    d = p["w"] - w_star
    return 0.5 * (jnp.sum(variance[:, None] * d * d) + d_out * noise**2)

  return Problem(
    lambda key: {"w": jnp.zeros((d_in, d_out))}, loss, make_batch, evaluate, 1e-2
  )


def mlp(d_in=32, hidden=128, classes=10, batch=32) -> Problem:
  keys = jax.random.split(jax.random.key(7), 2)
  teacher_1 = jax.random.normal(keys[0], (d_in, 64)) / jnp.sqrt(d_in)
  teacher_2 = jax.random.normal(keys[1], (64, classes)) / 4

  def init(key):
    k = jax.random.split(key, 3)
    return {
      "w1": jax.random.normal(k[0], (d_in, hidden)) / jnp.sqrt(d_in),
      "w2": jax.random.normal(k[1], (hidden, hidden)) / jnp.sqrt(hidden),
      "w3": jax.random.normal(k[2], (hidden, classes)) / jnp.sqrt(hidden),
      "b1": jnp.zeros(hidden),
      "b2": jnp.zeros(hidden),
    }

  def logits(p, x):
    h = jax.nn.gelu(x @ p["w1"] + p["b1"])
    return jax.nn.gelu(h @ p["w2"] + p["b2"]) @ p["w3"]

  def labels(key, x):
    return jax.random.categorical(key, 3 * jnp.tanh(x @ teacher_1) @ teacher_2)

  def make_batch(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (batch, d_in))
    return x, labels(k2, x)

  x_eval = jax.random.normal(jax.random.key(5), (4096, d_in))
  y_eval = labels(jax.random.key(6), x_eval)

  def loss(p, b):
    x, y = b
    return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

  return Problem(init, loss, make_batch, lambda p: loss(p, (x_eval, y_eval)), 3e-3)


class _SimState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any


def simulated_adam(beta, store: Store, min_size=4096) -> optax.GradientTransformation:
  """Balanced Adam whose large leaves' moments go through ``store``."""
  apply = make_store(store)

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return _SimState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    c = 1 - beta**count
    key = jax.random.fold_in(jax.random.key(12345), count)
    leaves, treedef = jax.tree.flatten(grads)
    mus, nus, ups = [], [], []
    for i, (g, m, v) in enumerate(
      zip(
        leaves,
        treedef.flatten_up_to(state.mu),
        treedef.flatten_up_to(state.nu),
        strict=True,
      )
    ):
      m = beta * m + (1 - beta) * g
      v = beta * v + (1 - beta) * g * g
      ups.append((m / c) / (jnp.sqrt(v / c) + 1e-8))
      if g.size >= min_size and g.size % store.block == 0:
        m, v = apply(m.reshape(-1), v.reshape(-1), jax.random.fold_in(key, i))
        m, v = m.reshape(g.shape), v.reshape(g.shape)
      mus.append(m)
      nus.append(v)
    tree = functools.partial(jax.tree.unflatten, treedef)
    return tree(ups), _SimState(count, tree(mus), tree(nus))

  return optax.GradientTransformation(init, update)


def train(problem: Problem, make_tx, seeds, steps) -> np.ndarray:
  schedule = optax.cosine_decay_schedule(problem.learning_rate, steps, alpha=0.1)

  def one(seed):
    tx = optax.chain(make_tx(), optax.scale_by_learning_rate(schedule))
    params = problem.init(jax.random.key(seed))

    def body(carry, t):
      p, s = carry
      batch = problem.batch(jax.random.fold_in(jax.random.key(seed + 1000), t))
      updates, s = tx.update(jax.grad(problem.loss)(p, batch), s, p)
      return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
    return problem.evaluate(params)

  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(seeds)))


TRAINING_STORES = (
  Store(
    "bnb8 rtn",
    "moments",
    dynamic_levels(8, True),
    dynamic_levels(8, False),
    block=256,
    stochastic=False,
  ),
  Store("lib int8", "lib", mode="int8"),
  Store(
    "ao4 rtn",
    "moments",
    dynamic_levels(4, True),
    no_zero_linear(4),
    block=128,
    stochastic=False,
  ),
  Store("r4lin q4log1", "ratio", linear_levels(4), log_levels(4, 1), ratio_scale=False),
  Store("r5quad/s q3log1", "ratio", quad_levels(5), log_levels(3, 1)),
  Store("lib int4", "lib", mode="int4"),
)


def training_table(stores: Sequence[Store], quick: bool):
  seeds = [0, 1, 2]
  steps = 100 if quick else 4000
  rows = []
  for name, problem in (("regression", regression()), ("mlp", mlp())):
    for beta in BETAS:
      base = train(
        problem, lambda beta=beta: optax.scale_by_adam(beta, beta), seeds, steps
      )
      spread = 100 * base.std() / base.mean()
      print(
        f"  {name:10s} beta={beta:<6} float32 {base.mean():.5f} (seed spread"
        f" {spread:.2f}%)",
        flush=True,
      )
      for store in stores:
        if store.kind == "lib":
          make = functools.partial(
            lowbit.scale_by_balanced_adam_lowbit, beta, state_dtype=store.mode
          )
        else:
          make = functools.partial(simulated_adam, beta, store)
        loss = train(problem, make, seeds, steps)
        gap = 100 * (loss.mean() / base.mean() - 1)
        rows.append(
          {
            "problem": name,
            "beta": beta,
            "store": store.name,
            "gap": gap,
            "spread": spread,
          }
        )
        print(f"  {name:10s} beta={beta:<6} {store.name:20s} {gap:+8.2f}%", flush=True)
  return rows


# ---- 3. Speed.


def speed_table(quick: bool):
  shape = (64, 256) if quick else (1024, 2048)
  params = jnp.zeros(shape)
  grads = jax.random.normal(jax.random.key(0), shape)
  variants = {
    "float32": bo.scale_by_balanced_adam(0.95),
    "bfloat16": bo.scale_by_balanced_adam(0.95, state_dtype="bfloat16"),
    "int8": lowbit.scale_by_balanced_adam_lowbit(0.95, state_dtype="int8"),
    "int4": lowbit.scale_by_balanced_adam_lowbit(0.95, state_dtype="int4"),
  }
  steps, carries, times = {}, {}, {k: [] for k in variants}
  for name, tx in variants.items():
    tx = optax.chain(tx, optax.scale(-1e-3))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, g, tx=tx):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    steps[name] = step
    carries[name] = step(jnp.copy(params), tx.init(params), grads)
  for _ in range(3 if quick else 9):  # Interleaved rounds: load drift hits all.
    for name, step in steps.items():
      p, s = carries[name]
      jax.block_until_ready(p)
      start = time.perf_counter()
      for _ in range(5):
        p, s = step(p, s, grads)
      jax.block_until_ready(p)
      times[name].append((time.perf_counter() - start) / 5)
      carries[name] = (p, s)
  bf16 = np.asarray(times["bfloat16"])
  for name, t in times.items():
    ratio = np.median(np.asarray(t) / bf16)
    print(f"  {name:9s} {1e3 * np.median(t):7.2f} ms   x{ratio:.2f} of bfloat16")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="a smoke run")
  parser.add_argument("--coords", type=int, default=4096)
  args = parser.parse_args(argv)
  coords = 256 if args.quick else args.coords
  header = "  ".join(f"{'b=' + str(b):>13s}" for b in BETAS)
  print(f"1. Tracking: dU and lnv per beta\n  {'stream':6s} {'store':24s} {header}")
  stores = INT8_STORES + INT4_STORES
  if args.quick:  # One simulated and one library store of each width.
    stores = (INT8_STORES[0], INT8_STORES[-1], INT4_STORES[0], INT4_STORES[-1])
  tracking_table(stores, ["mixed"], coords, args.quick)
  chosen = [s for s in INT8_STORES + INT4_STORES if s.kind == "lib"]
  if not args.quick:
    tracking_table(
      [*chosen, INT8_STORES[3], INT8_STORES[6]], ["noise"], coords, args.quick
    )
  print("2. Training: final loss vs float32 state (3 seeds)")
  training_table(TRAINING_STORES[:2] if args.quick else TRAINING_STORES, args.quick)
  print("3. Speed: one step on CPU")
  speed_table(args.quick)


if __name__ == "__main__":
  main()
