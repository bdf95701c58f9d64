"""Parity with optax.adam(b1 = b2): every path x every dtype x gradient scales.

Each dtype configuration compiles one function that runs every path (and
optax.adam beside it) over a short gradient stream at every gradient scale at
once (``vmap`` over the scales, ``scan`` over the steps), so the whole matrix
costs a few compilations.

What each path is held to, and why:

* Where optax works (float32, float64, complex64, complex128, float32 params
  with bfloat16 gradients; scales whose |g|² neither under- nor overflows):
  every path equals optax.adam, and the float64 reference.
* float16 and bfloat16 params, where optax.adam keeps float16 / round-to-nearest
  bfloat16 moments and breaks (|g|² overflows float16 at |g| > 256, underflows
  it at |g| < 2.4e-4): every path equals a float64 NumPy reference on the same
  (rounded) gradients.
* Extreme scales in float32's exponent range (|g| = 1e-30, 3e19): the plain
  paths do what optax does (|g|² under/overflows in float32; the update is
  m̂/eps or 0, finite), and scale_safe, whose point is this range, equals the
  float64 reference.
* The wrappers (inject_hyperparams, MultiSteps, masked, partition) equal the
  same wrapper around optax.adam.

Tolerances are absolute, in units of the learning rate (updates are O(lr)):
TOLERANCES below, per dtype, chosen as a few times the dtype's rounding of an
O(1) quantity (float32 1e-5, float64 1e-11, float16 output 2e-3, bfloat16
output 1e-2, bfloat16 state 3e-2, optax with bfloat16 gradients 1e-2: optax
squares them in bfloat16).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import absltest, parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import balanced_optax as bo

LR, BETA, STEPS = 1e-2, 0.9, 24
bf16, f16 = jnp.bfloat16, jnp.float16

# name -> (params dtype, grads dtype, needs x64, scales)
NORMAL_SCALES = (1e-30, 1e-6, 1.0, 1e15, 3e19)
EXTREME = {1e-30, 3e19}
FLOAT16_SCALES = (1e-4, 1e-2, 1.0, 1e3)
DTYPES = {
  "float32": (jnp.float32, jnp.float32, False, NORMAL_SCALES),
  "complex64": (jnp.complex64, jnp.complex64, False, NORMAL_SCALES),
  "bfloat16": (bf16, bf16, False, NORMAL_SCALES),
  "float16": (f16, f16, False, FLOAT16_SCALES),
  "float32_params_bfloat16_grads": (jnp.float32, bf16, False, NORMAL_SCALES),
  "bfloat16_params_float32_grads": (bf16, jnp.float32, False, NORMAL_SCALES),
  "float64": (jnp.float64, jnp.float64, True, NORMAL_SCALES),
  "complex128": (jnp.complex128, jnp.complex128, True, NORMAL_SCALES),
}
# Where optax.adam itself is right (its moments hold |g|² in a wide dtype).
OPTAX_WORKS = {
  "float32",
  "complex64",
  "float32_params_bfloat16_grads",
  "float64",
  "complex128",
}
TOLERANCES = {
  "float32": 1e-5,
  "complex64": 1e-5,
  "bfloat16": 3e-2,
  "float16": 2e-3,
  "float32_params_bfloat16_grads": 1e-5,
  "bfloat16_params_float32_grads": 3e-2,
  "float64": 1e-11,
  "complex128": 1e-11,
}
OPTAX_TOLERANCE = {"float32_params_bfloat16_grads": 1e-2}
BF16_STATE_TOLERANCE = 3e-2
# The compositions and the bfloat16 state run on the dtypes where they add a
# case of their own (each path is one more compilation in every config).
WRAPPER_DTYPES = {"float32", "complex64", "float32_params_bfloat16_grads"}
BF16_STATE_DTYPES = {"float32", "float64", "float32_params_bfloat16_grads"}
# eps = 0 matters where |g|² underflows: the float32 exponent range and float16.
EPS0_DTYPES = {"float32", "complex64", "float16", "float64"}
PLAIN = ("fused", "tied_moments", "variance_ema")
BF16_STATE = ("fused_bf16_state", "tied_moments_bf16_state")
WRAPPERS = ("inject_hyperparams", "multi_steps", "masked", "partition")

# A fixed tree with a matrix, a vector and a scalar (hypothesis varies the
# shapes below); the mask and labels split it for masked and partition.
SHAPES = {"w": (2, 3), "s": ()}
MASK = {"w": True, "s": False}
LABELS = {"w": "fused", "s": "chain"}


def _chain(estimator, eps):
  return optax.chain(estimator, bo.snr_sign_step(eps), optax.scale_by_learning_rate(LR))


def _paths(eps, wrappers=True, bf16_state=True, accumulator_dtype=None):
  """Every path of ours, and optax's counterpart of each.

  MultiSteps accumulates in ``accumulator_dtype``: complex params need theirs,
  since optax's default accumulator drops the imaginary part (wrappers_test).
  """
  ours = {
    "fused": bo.balanced_adam(LR, BETA, eps),
    "tied_moments": _chain(bo.tied_moments(BETA), eps),
    "variance_ema": _chain(bo.variance_ema(BETA), eps),
    "scale_safe": bo.balanced_adam(LR, BETA, eps, scale_safe=True),
    "inject_hyperparams": optax.inject_hyperparams(bo.balanced_adam)(
      learning_rate=LR, beta=BETA, eps=eps
    ),
    "multi_steps": optax.MultiSteps(
      bo.balanced_adam(LR, BETA, eps), 2, accumulator_dtype=accumulator_dtype
    ).gradient_transformation(),
    "masked": optax.masked(bo.balanced_adam(LR, BETA, eps), MASK),
    "partition": optax.partition(
      {
        "fused": bo.balanced_adam(LR, BETA, eps),
        "chain": _chain(bo.variance_ema(BETA), eps),
      },
      LABELS,
    ),
  }
  if not wrappers:
    ours = {k: v for k, v in ours.items() if k not in WRAPPERS}
  if bf16_state:  # Not for complex: bfloat16 has no complex form (ValueError).
    ours["fused_bf16_state"] = bo.balanced_adam(LR, BETA, eps, state_dtype=bf16)
    ours["tied_moments_bf16_state"] = _chain(
      bo.tied_moments(BETA, state_dtype=bf16), eps
    )
  adam = functools.partial(optax.adam, LR, BETA, BETA, eps=eps)
  theirs = {
    "adam": adam(),
    "inject_hyperparams": optax.inject_hyperparams(optax.adam)(
      learning_rate=LR, b1=BETA, b2=BETA, eps=eps
    ),
    "multi_steps": optax.MultiSteps(
      adam(), 2, accumulator_dtype=accumulator_dtype
    ).gradient_transformation(),
    "masked": optax.masked(adam(), MASK),
    "partition": optax.partition({"fused": adam(), "chain": adam()}, LABELS),
  }
  if not wrappers:
    theirs = {"adam": theirs["adam"]}
  return ours, theirs


def _run(tx, params, grads):
  """The stacked updates of tx along grads (a tree with a leading step axis)."""

  def step(state, g):
    updates, state = tx.update(g, state, params)
    return state, updates

  return jax.lax.scan(step, tx.init(params), grads)[1]


@functools.cache
def _matrix_fn(eps, wrappers, bf16_state, with_optax):
  """One compiled function: every path at every scale (leading axis)."""

  def run_all(params, grads):
    dtype = jax.tree.leaves(params)[0].dtype
    complex_params = jnp.issubdtype(dtype, jnp.complexfloating)
    ours, theirs = _paths(
      eps, wrappers, bf16_state, accumulator_dtype=dtype if complex_params else None
    )
    if not with_optax:
      theirs = {}
    every = {
      **{k: v for k, v in ours.items()},
      **{"optax_" + k: v for k, v in theirs.items()},
    }
    return {
      name: jax.vmap(functools.partial(_run, tx, params))(grads)
      for name, tx in every.items()
    }

  return jax.jit(run_all)


def _stream(shapes, param_dtype, grad_dtype, scales, seed=0, steps=STEPS):
  """Gradients (scales, steps, ...) per leaf: a fixed mean plus noise, scaled.

  Returns the stream in grad_dtype and the same values in float64/complex128
  (the reference sees exactly the rounded gradients the optimizers see).
  """
  rng = np.random.default_rng(seed)
  is_complex = jnp.issubdtype(param_dtype, jnp.complexfloating)
  grads, exact = {}, {}
  for name, shape in shapes.items():

    def draw(shape=shape):
      mean = rng.normal(size=shape)
      return mean + 0.5 * rng.normal(size=(steps, *shape))

    g = draw() + (1j * draw() if is_complex else 0)
    scaled = np.stack([s * g for s in scales])
    grads[name] = jnp.asarray(scaled, grad_dtype)
    exact[name] = np.asarray(grads[name]).astype(
      np.complex128 if is_complex else np.float64
    )
  return grads, exact


def _reference(exact, eps, scale_safe_form=False):
  """float64 NumPy balanced Adam on the (scales, steps, ...) stream, leafwise."""
  del scale_safe_form
  out = {}
  for name, g in exact.items():
    m = np.zeros_like(g[:, 0])
    v = np.zeros(g[:, 0].shape)
    us = []
    for k in range(g.shape[1]):
      m = BETA * m + (1 - BETA) * g[:, k]
      v = BETA * v + (1 - BETA) * np.abs(g[:, k]) ** 2
      c = 1 - BETA ** (k + 1)
      denom = np.sqrt(v / c) + eps
      us.append(-LR * np.where(denom > 0, (m / c) / np.where(denom > 0, denom, 1), 0))
    out[name] = np.stack(us, axis=1)
  return out


def _assert_close(got, want, tol, what):
  for name in SHAPES if set(got) == set(SHAPES) else got:
    g = np.asarray(got[name]).astype(np.complex128)
    w = np.asarray(want[name]).astype(np.complex128)
    err = np.abs(g - w).max() / LR if g.size else 0.0
    assert err <= tol, f"{what}[{name}]: max |error| {err:.3g} lr > {tol:g} lr"


def _assert_not_worse(got, adam, want, tol, what):
  for name in got:
    g, a, w = (np.asarray(t[name]).astype(np.complex128) for t in (got, adam, want))
    excess = (np.abs(g - w) - np.abs(a - w)).max() / LR if g.size else 0.0
    assert excess <= tol, (
      f"{what}[{name}]: {excess:.3g} lr further from float64 than optax.adam"
    )


def _optax_dtype(params, grads):
  """The dtype of optax.adam's update for each leaf (what ours must return)."""
  tx = optax.adam(LR, BETA, BETA)
  out = jax.eval_shape(lambda p, g: tx.update(g, tx.init(p), p)[0], params, grads)
  return {k: v.dtype for k, v in out.items()}


class MatrixTest(parameterized.TestCase):
  def test_every_path_matches_optax_in_float32(self):
    self._check_dtype("float32", 1e-8)

  @parameterized.parameters(
    *[(d, 1e-8) for d in DTYPES], *[(d, 0.0) for d in DTYPES if d in EPS0_DTYPES]
  )
  @pytest.mark.slow
  def test_every_path_matches_optax_or_the_float64_reference(self, dtype, eps):
    self._check_dtype(dtype, eps)

  def _check_dtype(self, dtype, eps):
    param_dtype, grad_dtype, x64, scales = DTYPES[dtype]
    with jax.enable_x64(x64):
      self._check(dtype, eps, param_dtype, grad_dtype, scales)

  def _check(self, dtype, eps, param_dtype, grad_dtype, scales):
    params = {k: jnp.zeros(s, param_dtype) for k, s in SHAPES.items()}
    grads, exact = _stream(SHAPES, param_dtype, grad_dtype, scales)
    # optax.adam cannot run bfloat16 params with float32 gradients in a scan:
    # its moments change dtype (bfloat16 -> float32) after the first step.
    with_optax = jnp.promote_types(param_dtype, grad_dtype) == param_dtype
    out = _matrix_fn(
      eps, dtype in WRAPPER_DTYPES, dtype in BF16_STATE_DTYPES, with_optax
    )(params, grads)
    ref = _reference(exact, eps)
    want_dtype = _optax_dtype(
      params, {k: jnp.zeros(s, grad_dtype) for k, s in SHAPES.items()}
    )
    tol = TOLERANCES[dtype]
    wide = jnp.finfo(param_dtype).bits == 64
    optax_works = dtype in OPTAX_WORKS
    failures = []

    def check(fn, *args):
      try:
        fn(*args)
      except AssertionError as e:
        failures.append(str(e))

    def at(tree, i):
      return {k: v[i] for k, v in tree.items()}

    def finite(tree):
      return all(np.isfinite(np.asarray(x)).all() for x in tree.values())

    for path in out:
      if path.startswith("optax_") or (path in WRAPPERS and not optax_works):
        continue  # A wrapper around a broken optax.adam is no reference.
      mirror_dtypes = out["optax_" + path] if path in WRAPPERS else want_dtype
      for leaf, u in out[path].items():
        want = getattr(mirror_dtypes[leaf], "dtype", mirror_dtypes[leaf])
        if u.dtype != want:
          failures.append(f"{dtype} {path}[{leaf}]: dtype {u.dtype}, optax {want}")
      for i, scale in enumerate(scales):
        got, ref_i = at(out[path], i), at(ref, i)
        what = f"{dtype} eps={eps} scale={scale:g} {path}"
        if not finite(got):
          failures.append(f"{what}: not finite")
          continue
        ptol = BF16_STATE_TOLERANCE if path in BF16_STATE else tol
        # |g|² leaves float32's exponent range (bfloat16 state shares it).
        extreme = scale in EXTREME and (not wide or path in BF16_STATE)
        adam = at(out["optax_adam"], i) if with_optax else None
        if path in WRAPPERS:
          mirror = at(out["optax_" + path], i)
          wtol = max(ptol, OPTAX_TOLERANCE.get(dtype, 0))
          if not finite(mirror):
            pass  # optax gives inf/NaN (|g|² under/overflowed); ours is finite.
          elif extreme:  # The variance_ema half of partition beats optax here.
            check(_assert_not_worse, got, mirror, ref_i, wtol, what)
          else:
            check(_assert_close, got, mirror, wtol, what)
        elif path == "scale_safe" or not extreme:
          check(_assert_close, got, ref_i, ptol, what + " vs float64")
          if optax_works and finite(adam) and not extreme:
            ptol = max(ptol, OPTAX_TOLERANCE.get(dtype, 0))
            check(_assert_close, got, adam, ptol, what + " vs optax.adam")
        elif path in BF16_STATE and wide:
          pass  # Finite is all a bfloat16 state promises out of its range.
        else:
          # |g|² under/overflows float32: never further from the float64
          # answer than optax.adam (or, where optax gives inf/NaN, the fused
          # path) is. fused and tied_moments equal it here; variance_ema,
          # which never forms g², is closer where its variance stays finite.
          base = adam if adam is not None and finite(adam) else at(out["fused"], i)
          check(_assert_not_worse, got, base, ref_i, ptol, what)
    self.assertEqual(failures, [], "\n".join(failures))


class VariantsTest(chex.TestCase):
  """The core paths jitted and not (short stream, one small tree)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.complex64, jnp.float16)
  def test_paths_equal_the_float64_reference(self, dtype):
    shapes = {"w": (2, 2), "s": ()}
    params = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    grads, exact = _stream(shapes, dtype, dtype, (1.0,), seed=1, steps=4)
    ref = _reference(exact, 1e-8)
    ours, _ = _paths(1e-8, wrappers=False, bf16_state=False)
    tol = 2e-3 if dtype == f16 else 1e-5
    for name in (*PLAIN, "scale_safe"):
      tx = ours[name]
      update, state = self.variant(tx.update), tx.init(params)
      for k in range(4):
        u, state = update({n: g[0, k] for n, g in grads.items()}, state, params)
        for leaf in shapes:
          self.assertEqual(u[leaf].dtype, dtype)
          err = np.abs(np.asarray(u[leaf]) - ref[leaf][0, k]).max() / LR
          self.assertLessEqual(err, tol, f"{name} step {k} {leaf}")


SHAPE_MENU = ((), (1,), (3,), (2, 2), (1, 0), (2, 1, 2))


@functools.cache
def _pair_fn(path):
  """Our path and optax.adam on one stream, beta and eps traced."""

  def run(params, grads, beta, eps):
    ours = {
      "fused": bo.balanced_adam(LR, beta, eps),
      "tied_moments": _chain(bo.tied_moments(beta), eps),
      "variance_ema": _chain(bo.variance_ema(beta), eps),
      "scale_safe": bo.balanced_adam(LR, beta, eps, scale_safe=True),
    }[path]
    adam = optax.adam(LR, beta, beta, eps=eps)
    return _run(ours, params, grads), _run(adam, params, grads)

  return jax.jit(run)


@settings(max_examples=4)  # each example compiles every path: fewer than the profile's
@given(
  shapes=st.lists(st.sampled_from(SHAPE_MENU), min_size=1, max_size=3),
  dtype=st.sampled_from((jnp.float32, jnp.complex64)),
  beta=st.sampled_from((0.0, 0.5, 0.9, 0.999)),
  eps=st.sampled_from((1e-8, 1e-3)),
  seed=st.integers(0, 2**16),
)
def test_random_trees_match_optax(shapes, dtype, beta, eps, seed):
  tree = {f"p{i}": s for i, s in enumerate(shapes)}
  params = {k: jnp.zeros(s, dtype) for k, s in tree.items()}
  grads, _ = _stream(tree, dtype, dtype, (1.0,), seed=seed, steps=12)
  grads = {k: v[0] for k, v in grads.items()}
  # Float32 rounding of the bias correction 1 - beta^k grows as 1 / (1 - beta).
  tol = max(1e-5, 3e-8 / (1 - beta)) * 10
  for path in ("fused", "tied_moments", "variance_ema", "scale_safe"):
    got, want = _pair_fn(path)(params, grads, jnp.float32(beta), jnp.float32(eps))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for k in tree:
      assert got[k].dtype == want[k].dtype, (path, k, got[k].dtype)
      if got[k].size:
        err = np.abs(np.asarray(got[k]) - np.asarray(want[k])).max() / LR
        assert err <= tol, (path, k, beta, eps, err)


if __name__ == "__main__":
  absltest.main()
