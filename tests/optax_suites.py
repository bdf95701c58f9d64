"""optax's own optimizer tests, pointed at every balanced path.

optax holds its optimizers to a set of common tests (``alias_test.AliasTest``,
``contrib/_common_test.ContribTest``, ``float64_test.Float64Test``,
``sharding_test.ShardingTest``). The suites here import those test methods
from the *installed* optax and run them, unchanged, with the balanced
optimizers of :data:`OPTIMIZERS` substituted for optax's: each optax module
looks its optimizers up by name through a module function (``_get_opt``,
``_get_opt_factory``), which the suites patch for the length of a test. No
test code is copied.

Two rules keep a suite from passing by not running:

* optax gates some tests on ``jax.__version__ < '0.7.2'``, a string comparison
  that holds for jax '0.10.2' and would skip them; during a suite's test
  ``jax.__version__`` compares as a version (:class:`_Version`).
* a skip that optax's code asks for fails the test instead; the only skips
  are the cases of :data:`SKIPS`, each a difference docs/guarantees.md states.

:func:`alias_suite` and :func:`contrib_suite` build a suite over a set of
paths, so that the fast tier (``-m "not slow"``) can run one path's cases and
the full suite every path's. ``ShardingSuite`` needs 8 devices:
``tests/optax_suites_test.py`` runs it in a subprocess (``pytest
tests/optax_suites.py``, a file the suite's own collection never picks up).
"""

import functools
import importlib
import os
import re
from collections.abc import Sequence
from unittest import mock

import jax
import jax.numpy as jnp
import optax
from absl.testing import parameterized
from optax._src import alias_test, float64_test
from optax.contrib import _common_test as contrib_common_test

import balanced_optax as bo


def _import_sharding_test():
  """optax's sharding_test, without the 8 host devices its import asks for:
  it sets XLA_FLAGS, which would give this process (if jax has not started)
  and every subprocess of the test session 8 devices."""
  saved = os.environ.get("XLA_FLAGS")
  try:
    return importlib.import_module("optax._src.sharding_test")
  finally:
    if saved is None:
      os.environ.pop("XLA_FLAGS", None)
    else:
      os.environ["XLA_FLAGS"] = saved


sharding_test = _import_sharding_test()


def _tied_moments_chain(learning_rate: optax.ScalarOrSchedule, beta=0.95, eps=1e-8):
  return optax.chain(
    bo.tied_moments(beta),
    bo.snr_sign_step(eps),
    optax.scale_by_learning_rate(learning_rate),
  )


def _variance_ema_chain(learning_rate: optax.ScalarOrSchedule, beta=0.95, eps=1e-8):
  return optax.chain(
    bo.variance_ema(beta),
    bo.snr_sign_step(eps),
    optax.scale_by_learning_rate(learning_rate),
  )


def _nesterov(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_adam(learning_rate, beta, nesterov=True)


def _unguarded(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_adam(learning_rate, beta, guard_nonfinite=False)


def _bfloat16_state(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_adam(learning_rate, beta, state_dtype="bfloat16")


def _scale_safe(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_adam(learning_rate, beta, scale_safe=True)


def _int8_state(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  # min_size=0: optax's test params are small, and would all keep float32.
  return bo.balanced_adam(learning_rate, beta, state_dtype="int8", min_size=0)


def _int4_state(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_adam(learning_rate, beta, state_dtype="int4", min_size=0)


def _int8_muon(learning_rate: optax.ScalarOrSchedule, beta=0.95):
  return bo.balanced_muon(learning_rate, beta, state_dtype="int8", min_size=0)


# Every balanced path: name -> (factory, the keyword arguments optax's
# suites build it with). The learning rates are the ones optax's suites give
# optax.adam (0.1) and optax.contrib.muon (0.01).
OPTIMIZERS = {
  "balanced_adam": (bo.balanced_adam, {"learning_rate": 0.1}),
  "balanced_adamw": (bo.balanced_adamw, {"learning_rate": 0.1}),
  "nesterov": (_nesterov, {"learning_rate": 0.1}),
  "unguarded": (_unguarded, {"learning_rate": 0.1}),
  "bfloat16_state": (_bfloat16_state, {"learning_rate": 0.1}),
  "scale_safe": (_scale_safe, {"learning_rate": 0.1}),
  "tied_moments_chain": (_tied_moments_chain, {"learning_rate": 0.1}),
  "variance_ema_chain": (_variance_ema_chain, {"learning_rate": 0.1}),
  "balanced_muon": (bo.balanced_muon, {"learning_rate": 0.01}),
  "int8_state": (_int8_state, {"learning_rate": 0.1}),
  "int4_state": (_int4_state, {"learning_rate": 0.1}),
  "int8_muon": (_int8_muon, {"learning_rate": 0.01}),
}

# optax's test_explicit_dtype branches on the names 'adam' and 'adamw' and
# passes optax's mu_dtype; the balanced optimizers' state_dtype sets both
# moments' dtype.
_EXPLICIT_DTYPE = {
  "adam": lambda learning_rate, mu_dtype: bo.balanced_adam(
    learning_rate, state_dtype=mu_dtype
  ),
  "adamw": lambda learning_rate, mu_dtype: bo.balanced_adamw(
    learning_rate, state_dtype=mu_dtype
  ),
}

_COMPLEX_BFLOAT16 = (
  "bfloat16 state has no complex form: complex params with state_dtype=bfloat16"
  " raise ValueError at init (docs/guarantees.md, 'Complex parameters')."
)
_STATE_DTYPE_IS_A_PRECISION = (
  "state_dtype names a real precision: complex params keep complex moments of"
  " that precision, and a complex state_dtype is a ValueError; optax.adam's"
  " mu_dtype=float32 or bfloat16 drops the imaginary part of complex params'"
  " first moment (docs/guarantees.md, 'Complex parameters')."
)
_LOW_BIT_PATHS = ("int8_state", "int4_state", "int8_muon")
_COMPLEX_LOW_BIT = (
  "low-bit state stores the real ratio m/sqrt(v): complex params raise"
  " ValueError at init (docs/guarantees.md, 'Complex parameters')."
)
_INT4_ROSENBROCK = (
  "int4 keeps sqrt(v) on 4 levels a factor 2 apart: where a block's roots"
  " differ by a few times (Rosenbrock's two coordinates share a block) the"
  " ratio is biased, and optax's Rosenbrock tests end outside their 3%"
  " tolerance (contrib's at (0.947, 0.900), alias_test's at (1.053, 1.097))"
  " (docs/lowbit.md, 'What int4 costs'; docs/guarantees.md)."
)
# The cases that check what the balanced optimizers do differently on
# purpose, by test id, with the reason.
SKIPS = {
  **{
    f"test_optimization_{path}_{target}_complex64": _COMPLEX_LOW_BIT
    for path in _LOW_BIT_PATHS
    for target in ("parabola", "rosenbrock")
  },
  **{
    f"test_state_shape_dtype_shard_stability_{path}_{dtype}": _COMPLEX_LOW_BIT
    for path in _LOW_BIT_PATHS
    for dtype in ("complex64", "complex128")
  },
  "test_optimizers_int4_state_rosenbrock_float32": _INT4_ROSENBROCK,
  "test_optimization_int4_state_rosenbrock_float32": _INT4_ROSENBROCK,
  **{
    f"test_optimization_bfloat16_state_{target}_complex64": _COMPLEX_BFLOAT16
    for target in ("parabola", "rosenbrock")
  },
  **{
    f"test_state_shape_dtype_shard_stability_bfloat16_state_{dtype}": (
      _COMPLEX_BFLOAT16
    )
    for dtype in ("complex64", "complex128")
  },
  **{
    f"test_explicit_dtype_{opt}_params_{params}_state_{state}": (
      _STATE_DTYPE_IS_A_PRECISION
    )
    for opt in ("adam", "adamw")
    for params, state in (
      ("bfloat16", "complex64"),
      ("float32", "complex64"),
      ("complex64", "bfloat16"),
      ("complex64", "float32"),
      ("complex64", "complex64"),
      ("default", "complex64"),
    )
  },
}


def _version_tuple(version: str) -> tuple[int, ...]:
  return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


class _Version(str):
  """A version string that compares as a version: '0.10.2' > '0.7.2'."""

  def __lt__(self, other):
    return _version_tuple(self) < _version_tuple(other)

  def __le__(self, other):
    return _version_tuple(self) <= _version_tuple(other)

  def __gt__(self, other):
    return _version_tuple(self) > _version_tuple(other)

  def __ge__(self, other):
    return _version_tuple(self) >= _version_tuple(other)


def _method(optax_test_class: type, name: str):
  """The undecorated test method ``name`` of one of optax's test classes."""
  for attribute in vars(optax_test_class).values():
    original = getattr(attribute, "__wrapped__", None)
    if getattr(original, "__name__", None) == name:
      return original
  raise AttributeError(f"{optax_test_class.__name__} has no test {name!r}")


def _get_opt(test, opt_name):
  del test
  if opt_name in _EXPLICIT_DTYPE:
    return _EXPLICIT_DTYPE[opt_name]
  return OPTIMIZERS[opt_name][0]


def _get_opt_factory(opt_name):
  return OPTIMIZERS[opt_name][0]


class _Suite(parameterized.TestCase):
  """Runs optax's test methods with the balanced optimizers substituted."""

  def setUp(self):
    super().setUp()
    name = self._testMethodName
    if name in SKIPS:
      super().skipTest(SKIPS[name])
    for module, function, replacement in (
      (alias_test, "_get_opt", _get_opt),
      (contrib_common_test, "_get_opt_factory", _get_opt_factory),
    ):
      self.enter_context(mock.patch.object(module, function, replacement))
    self.enter_context(mock.patch.object(jax, "__version__", _Version(jax.__version__)))
    # float64_test switches x64 on and off by hand: a failure in between
    # must not leave it on for the tests that follow.
    x64 = jax.config.values["jax_enable_x64"]
    self.addCleanup(jax.config.update, "jax_enable_x64", x64)

  def skipTest(self, reason):
    self.fail(
      f"optax's test asked to skip ({reason!r}); a balanced path must run every"
      " case or be listed in tests/optax_suites.py's SKIPS with its reason."
    )


def _cases(**axes) -> list[dict]:
  """Named cases (``testcase_name``) over the product of named axes.

  Each axis maps a case-name part to the test's keyword arguments.
  """
  cases = [{"testcase_name": ""}]
  for axis in axes.values():
    cases = [
      {
        **case,
        **kwargs,
        "testcase_name": "_".join(filter(None, [case["testcase_name"], part])),
      }
      for case in cases
      for part, kwargs in axis.items()
    ]
  return cases


def _optax_test(optax_test_class: type, name: str, cases: list[dict]):
  """optax's test method ``name`` of ``optax_test_class``, once per case."""
  return parameterized.named_parameters(*cases)(_method(optax_test_class, name))


def _optimizer_axis(paths: Sequence[str]) -> dict:
  return {name: {"opt_name": name, "opt_kwargs": OPTIMIZERS[name][1]} for name in paths}


def _contrib_optimizer_axis(paths: Sequence[str]) -> dict:
  return {
    name: {**kwargs, "wrapper_name": None, "wrapper_kwargs": None}
    for name, kwargs in _optimizer_axis(paths).items()
  }


def _dtype_axis(*dtypes) -> dict:
  return {jnp.dtype(d).name: {"dtype": d} for d in dtypes}


_ALL_DTYPES = (
  jnp.float16,
  jnp.bfloat16,
  jnp.float32,
  jnp.float64,
  jnp.complex64,
  jnp.complex128,
)
# optax's test_explicit_dtype names its optimizers 'adam' and 'adamw': the
# balanced path each one stands for.
_EXPLICIT_DTYPE_PATHS = {"adam": "balanced_adam", "adamw": "balanced_adamw"}


def alias_suite(paths: Sequence[str]) -> type[_Suite]:
  """optax's ``alias_test.AliasTest`` common tests (the LBFGS ones aside) on
  the balanced ``paths``."""
  optimizer = _optimizer_axis(paths)
  test = functools.partial(_optax_test, alias_test.AliasTest)

  class AliasSuite(_Suite):
    test_optimization = test(
      "test_optimization",
      _cases(
        optimizer=optimizer,
        target={
          "parabola": {"target": alias_test._setup_parabola},
          "rosenbrock": {"target": alias_test._setup_rosenbrock},
        },
        dtype=_dtype_axis(jnp.float32, jnp.complex64),
      ),
    )
    test_optimizers_accept_extra_args = test(
      "test_optimizers_accept_extra_args", _cases(optimizer=optimizer)
    )
    test_optimizers_can_be_wrapped_in_inject_hyperparams = test(
      "test_optimizers_can_be_wrapped_in_inject_hyperparams",
      _cases(optimizer=optimizer),
    )
    test_explicit_dtype = test(
      "test_explicit_dtype",
      _cases(
        optimizer={
          name: {"opt_name": name}
          for name, path in _EXPLICIT_DTYPE_PATHS.items()
          if path in paths
        },
        params={
          f"params_{d or 'default'}": {"params_dtype": d}
          for d in ("bfloat16", "float32", "complex64", None)
        },
        state={
          f"state_{d or 'default'}": {"state_dtype": d}
          for d in ("bfloat16", "float32", "complex64", None)
        },
      ),
    )
    test_preserve_dtype = test(
      "test_preserve_dtype",
      _cases(optimizer=optimizer, dtype=_dtype_axis("bfloat16", "float32")),
    )
    test_state_shape_dtype_shard_stability = test(
      "test_state_shape_dtype_shard_stability",
      _cases(optimizer=optimizer, dtype=_dtype_axis(*_ALL_DTYPES)),
    )
    test_gradient_accumulation = test(
      "test_gradient_accumulation",
      _cases(optimizer=optimizer, dtype=_dtype_axis("bfloat16", "float32")),
    )

  return AliasSuite


def contrib_suite(paths: Sequence[str]) -> type[_Suite]:
  """optax's ``contrib/_common_test.ContribTest`` (its muon's tests) on the
  balanced ``paths``; its targets include matrices (Muon's leaves) and mixed
  1-D/2-D trees."""
  optimizer = _contrib_optimizer_axis(paths)
  test = functools.partial(_optax_test, contrib_common_test.ContribTest)

  class ContribSuite(_Suite):
    test_optimizers_accept_extra_args = test(
      "test_optimizers_accept_extra_args",
      _cases(optimizer=optimizer, wrap={"": {"wrap": False}}),
    )
    test_optimizers = test(
      "test_optimizers",
      _cases(
        optimizer=optimizer,
        target={
          "parabola": {"target": contrib_common_test._setup_parabola},
          "rosenbrock": {"target": contrib_common_test._setup_rosenbrock},
          "matrix": {"target": contrib_common_test._setup_matrix_parabola},
          "mixed": {"target": contrib_common_test._setup_mixed_tensor_target},
        },
        dtype=_dtype_axis("float32"),
      ),
    )
    test_optimizers_can_be_wrapped_in_inject_hyperparams = test(
      "test_optimizers_can_be_wrapped_in_inject_hyperparams",
      _cases(optimizer=_optimizer_axis(paths)),
    )
    test_state_shape_dtype_shard_stability = test(
      "test_state_shape_dtype_shard_stability",
      _cases(
        optimizer=optimizer,
        dtype=_dtype_axis(jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64),
      ),
    )
    test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such = test(
      "test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such",
      _cases(optimizer=optimizer),
    )

  return ContribSuite


class Float64Suite(_Suite):
  """optax's ``float64_test``: mixed float32/float64 params keep their dtypes."""

  _assert_dtype_equals = float64_test.Float64Test._assert_dtype_equals

  test_mixed_dtype_input_outputs = _optax_test(
    float64_test.Float64Test,
    "test_mixed_dtype_input_outputs",
    _cases(
      optimizer={
        name: {"transform_constr": factory, "transform_kwargs": kwargs}
        for name, (factory, kwargs) in OPTIMIZERS.items()
      }
    )
    + _cases(
      transform={
        "scale_by_balanced_adam": {
          "transform_constr": bo.scale_by_balanced_adam,
          "transform_kwargs": {},
        }
      }
    ),
  )


class ShardingSuite(_Suite):
  """optax's ``sharding_test``: abstract init, and explicit sharding kept by
  init and update, eager and jitted. Needs 8 devices."""

  _optimizers = _cases(
    optimizer={
      name: {"optimizer": factory(**kwargs)}
      for name, (factory, kwargs) in OPTIMIZERS.items()
    }
  )

  test_init_with_abstract_input = _optax_test(
    sharding_test.ShardingTest, "test_init_with_abstract_input", _optimizers
  )
  test_state_sharding_type_init_match_update = _optax_test(
    sharding_test.ShardingTest,
    "test_state_sharding_type_init_match_update",
    _optimizers,
  )
  test_state_sharding_type_preserved_with_jit = _optax_test(
    sharding_test.ShardingTest,
    "test_state_sharding_type_preserved_with_jit",
    _optimizers,
  )
