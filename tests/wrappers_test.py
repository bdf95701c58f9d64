"""Composes with optax's wrappers, and shards like the params."""

import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams

INJECTABLE = {
  "balanced_adam": bo.balanced_adam,
  "tied_moments_chain": lambda learning_rate, beta: optax.chain(
    bo.tied_moments(beta),
    bo.snr_sign_step(),
    optax.scale_by_learning_rate(learning_rate),
  ),
  "variance_ema_chain": lambda learning_rate, beta: optax.chain(
    bo.variance_ema(beta),
    bo.snr_sign_step(),
    optax.scale_by_learning_rate(learning_rate),
  ),
}
# Built with the learning rate and beta of _optax_reference.
MAKERS = {name: lambda make=make: make(1e-3, 0.9) for name, make in INJECTABLE.items()}


def _optax_reference():
  return optax.adam(1e-3, b1=0.9, b2=0.9)


class WrappersTest(chex.TestCase):
  @parameterized.named_parameters(*MAKERS.items())
  def test_masked(self, make):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 30, seed=20)
    mask = {"w": True, "layers": [False, True], "head": {"b": False}}
    got, _ = streams.reference(optax.masked(make(), mask), grads, params)
    want, _ = streams.reference(optax.masked(_optax_reference(), mask), grads, params)
    streams.assert_leafwise_close(got, want, rtol=2e-5)
    # Masked-out leaves pass the raw gradient through.
    np.testing.assert_array_equal(got["head"]["b"][-1], grads[-1]["head"]["b"])

  @parameterized.named_parameters(*MAKERS.items())
  def test_multi_steps(self, make):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 40, seed=21)
    got, _ = streams.reference(
      optax.MultiSteps(make(), every_k_schedule=4), grads, params
    )
    want, _ = streams.reference(
      optax.MultiSteps(_optax_reference(), every_k_schedule=4), grads, params
    )
    streams.assert_leafwise_close(got, want, rtol=2e-5)
    moved = np.abs(got["w"]).sum(axis=(1, 2)) > 0
    np.testing.assert_array_equal(moved, np.arange(40) % 4 == 3)  # Every 4th step.

  def test_multi_steps_on_complex_params_needs_the_accumulator_dtype(self):
    # optax.MultiSteps' default accumulator (accumulator_dtype=None) casts the
    # running sum to a real dtype between emissions, dropping the imaginary
    # part of complex gradients (optax 0.2.8; its DeprecationWarning says so).
    # With the params' complex dtype it averages them: each emitted update is
    # balanced_adam's on the mean of the k gradients.
    params = {"z": jnp.zeros((3, 2), jnp.complex64)}
    rng = np.random.default_rng(23)
    grads = [
      {
        "z": jnp.asarray(
          rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64
        )
      }
      for _ in range(12)
    ]
    tx = optax.MultiSteps(
      bo.balanced_adam(1e-2, 0.9), 3, accumulator_dtype=jnp.complex64
    )
    got, _ = streams.reference(tx, grads, params)
    means = [
      jax.tree.map(lambda *g: sum(g) / 3, *grads[i : i + 3]) for i in range(0, 12, 3)
    ]
    want, _ = streams.reference(bo.balanced_adam(1e-2, 0.9), means, params)
    streams.assert_leafwise_close(jax.tree.map(lambda u: u[2::3], got), want, rtol=1e-5)
    self.assertGreater(float(np.abs(np.asarray(want["z"]).imag).max()), 1e-3)

  @parameterized.named_parameters(
    ("guarded", {}),
    ("unguarded", {"guard_nonfinite": False}),
    ("int8", {"state_dtype": "int8", "min_size": 64}),
    ("int4", {"state_dtype": "int4", "min_size": 64}),
  )
  def test_apply_if_finite_skips_a_nan_step_and_keeps_the_state(self, options):
    # "big" keeps low-bit moments under a low-bit state_dtype.
    params = {**streams.nested_params(), "big": jnp.zeros((8, 64))}
    grads = streams.gradient_stream(params, 10, seed=22)
    tx = optax.apply_if_finite(bo.balanced_adam(1e-3, 0.9, **options), 3)
    update = jax.jit(tx.update)
    _, state = streams.run(update, tx.init(params), grads[:5], params)
    bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads[5])
    u, skipped = update(bad, state, params)
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(skipped.inner_state, state.inner_state)
    self.assertEqual(int(skipped.total_notfinite), 1)
    self.assertFalse(bool(skipped.last_finite))
    # And the run then continues as if the bad step never happened.
    got, _ = streams.run(update, skipped, grads[5:], params)
    want, _ = streams.run(update, state, grads[5:], params)
    chex.assert_trees_all_equal(got, want)

  def test_zero_nans_then_balanced_adam_equals_zero_nans_then_adam(self):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 20, seed=23)
    grads = [
      jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), g) if i % 5 == 2 else g
      for i, g in enumerate(grads)
    ]
    got, state = streams.reference(
      optax.chain(optax.zero_nans(), bo.balanced_adam(1e-3, 0.9)), grads, params
    )
    want, _ = streams.reference(
      optax.chain(optax.zero_nans(), _optax_reference()), grads, params
    )
    streams.assert_leafwise_close(got, want, rtol=2e-5)
    chex.assert_tree_all_finite(state)


_SHARDING_SCRIPT = textwrap.dedent(
  """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import balanced_optax as bo

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    shapes = {"w": (16, 8), "v": (6,), "s": ()}
    specs = {"w": P("data", "model"), "v": P("model"), "s": P()}
    def sample(shape):
      return jnp.asarray(rng.normal(size=shape), jnp.float32)
    grads = [{k: sample(s) for k, s in shapes.items()} for _ in range(5)]
    makers = {
        "fused": lambda: bo.balanced_adam(1e-3, 0.9),
        "scale_safe_bf16": lambda: bo.balanced_adam(
            1e-3, 0.9, scale_safe=True, state_dtype="bfloat16"),
        "variance_ema": lambda: optax.chain(bo.variance_ema(0.9), bo.snr_sign_step()),
    }
    # Explicit axes (jax.make_mesh's default) with jit(init) under set_mesh, and
    # Auto axes with eager init, the two ways users build sharded state.
    for axis_type, jit_init in ((AxisType.Explicit, True), (AxisType.Auto, False)):
      mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
      shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
      with jax.set_mesh(mesh):
        params = {k: jax.device_put(jnp.zeros(shapes[k]), s)
                  for k, s in shardings.items()}
        for name, make in makers.items():
          tx = make()
          state = (jax.jit(tx.init) if jit_init else tx.init)(params)
          update = jax.jit(tx.update)
          ref_state = tx.init(jax.device_get(params))
          for g in grads:
            sharded_g = {k: jax.device_put(v, shardings[k]) for k, v in g.items()}
            u, state = update(sharded_g, state, params)
            ref_u, ref_state = tx.update(g, ref_state)
          for k in shapes:
            ndim = len(shapes[k])
            assert u[k].sharding.is_equivalent_to(shardings[k], ndim), (name, k)
            np.testing.assert_allclose(u[k], ref_u[k], rtol=1e-5, atol=1e-5)
          moments = [(p, x) for p, x in jax.tree_util.tree_leaves_with_path(state)
                     if x.shape == shapes["w"]]
          assert len(moments) == 2, (name, moments)
          for path, leaf in moments:
            assert leaf.sharding.is_equivalent_to(shardings["w"], 2), (name, path)
    print("SHARDING OK")
    """
)


@pytest.mark.slow
def test_state_follows_the_params_named_sharding_on_8_devices(run_on_8_devices):
  run_on_8_devices(_SHARDING_SCRIPT, "SHARDING OK")


_LOW_BIT_SHARDING_SCRIPT = textwrap.dedent(
  """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import balanced_optax as bo
    from balanced_optax import lowbit

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    # FSDP: the first axis over 8 devices; shards hold whole blocks (64 along a
    # long last axis, 32 rows of a short one).
    shapes = {"w": (64, 256), "v": (512,), "k": (256, 3), "b": (8,)}
    specs = {"w": P("fsdp", None), "v": P("fsdp"), "k": P("fsdp", None), "b": P()}
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    def sample(shape):
      return jnp.asarray(rng.normal(size=shape) + 0.2, jnp.float32)
    grads = [{k: sample(s) for k, s in shapes.items()} for _ in range(6)]
    params = {k: jnp.zeros(s) for k, s in shapes.items()}
    for mode in ("int8", "int4"):
      tx = bo.scale_by_balanced_adam(0.95, state_dtype=mode, min_size=64)
      state_specs = lowbit.LowBitAdamState(P(), specs, specs, specs, specs, specs, P())
      state_shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s), state_specs,
        is_leaf=lambda x: isinstance(x, P))
      # One device.
      update = jax.jit(tx.update)
      state, single = tx.init(params), []
      for g in grads:
        u, state = update(g, state, params)
        single.append((u, state))
      # FSDP under jit: sharded params, gradients and state.
      sharded = lambda tree, sh: jax.device_put(tree, sh)
      p_sh = sharded(params, shardings)
      state = sharded(jax.jit(tx.init)(p_sh), state_shardings)
      fsdp = []
      for g in grads:
        u, state = update(sharded(g, shardings), state, p_sh)
        fsdp.append((u, state))
      assert state.codes["w"].sharding.is_equivalent_to(shardings["w"], 2)
      # shard_map: each device runs the transform on its own shard.
      mapped = jax.jit(jax.shard_map(
        tx.update, mesh=mesh, in_specs=(specs, state_specs, specs),
        out_specs=(specs, state_specs)))
      state = sharded(tx.init(params), state_shardings)
      shard_mapped = []
      for g in grads:
        u, state = mapped(sharded(g, shardings), state, p_sh)
        shard_mapped.append((u, state))
      for name, run in (("fsdp", fsdp), ("shard_map", shard_mapped)):
        for step, (a, b) in enumerate(zip(single, run)):
          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape, (mode, name)
            np.testing.assert_array_equal(
                np.asarray(x), np.asarray(y), err_msg=f"{mode} {name} {step}")
      assert np.abs(np.asarray(single[-1][0]["w"])).max() > 0.1
    print("LOW-BIT SHARDING OK")
    """
)


@pytest.mark.slow
def test_low_bit_state_is_bitwise_equal_on_one_device_fsdp_and_shard_map(
  run_on_8_devices,
):
  """jit on one device == jit with FSDP-sharded params, gradients and state
  == shard_map of the transform over the shards, bit for bit: blocks never
  straddle a shard and the rounding bits hash values, not positions."""
  run_on_8_devices(_LOW_BIT_SHARDING_SCRIPT, "LOW-BIT SHARDING OK")


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()


@pytest.mark.parametrize("name", sorted(INJECTABLE))
def test_inject_hyperparams_on_complex_params_runs_eagerly_as_optax(name):
  """inject_hyperparams casts the hyperparameters to the params' dtype, here
  complex64: an eager init and update equal optax.adam's (the construction
  checks rejected the complex learning rate 1e-2+0j)."""
  params = jnp.ones(2, jnp.complex64)
  grads = [jnp.array([0.3 + 1j, -1 + 0.5j], jnp.complex64), jnp.array([1j, 2.0])]
  tx = optax.inject_hyperparams(INJECTABLE[name])(learning_rate=1e-2, beta=0.9)
  ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2, b1=0.9, b2=0.9)
  state, ref_state = tx.init(params), ref.init(params)
  for g in grads:
    got, state = tx.update(g, state, params)
    want, ref_state = ref.update(g, ref_state, params)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_python_scalar_leaves_as_optax(name):
  """Params and gradients may be Python floats, as optax.adam takes them
  (the paths raised AttributeError: 'float' object has no attribute 'dtype')."""
  params, grads = {"a": 1.0, "b": jnp.ones(2)}, {"a": 0.5, "b": jnp.array([0.5, -2.0])}
  tx, ref = MAKERS[name](), _optax_reference()
  state, ref_state = tx.init(params), ref.init(params)
  for step in range(3):
    got, state = (
      jax.jit(tx.update)(grads, state, params)
      if step
      else tx.update(grads, state, params)
    )
    want, ref_state = ref.update(grads, ref_state, params)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    chex.assert_trees_all_equal_dtypes(got, want)


# ---- Low-bit state (state_dtype="int8" / "int4") under the same wrappers:
# each wrapper's result equals the optimizer run by hand on what the wrapper
# gives it (the codes' rounding bits hash values and the count, not positions).

LOW_BIT_MODES = ("int8", "int4")


def _low_bit(mode, learning_rate=1e-2):
  return bo.balanced_adam(learning_rate, 0.9, state_dtype=mode, min_size=64)


def _low_bit_params():
  """Two low-bit leaves (>= 64 elements), a float32 one and a scalar."""
  return {
    "w": jnp.zeros((8, 64)),
    "layers": [jnp.zeros((128,)), jnp.zeros(())],
    "head": {"b": jnp.zeros((2, 1, 3))},
  }


def _subtree(tree, keys):
  return {k: tree[k] for k in keys}


@pytest.mark.parametrize("mode", LOW_BIT_MODES)
def test_low_bit_inject_hyperparams_equals_the_plain_optimizer(mode):
  params = _low_bit_params()
  grads = streams.gradient_stream(params, 20, seed=30)
  injected = optax.inject_hyperparams(bo.balanced_adam, static_args=("min_size",))(
    learning_rate=1e-2, beta=0.9, state_dtype=mode, min_size=64
  )
  got, state = streams.reference(injected, grads, params)
  want, want_state = streams.reference(_low_bit(mode), grads, params)
  # beta traced or constant, the codes are the same bits (the float32 leaves'
  # 1 - beta rounds apart by an ulp, as on the float path).
  got_low, want_low = state.inner_state[0], want_state[0]
  for field in ("codes", "ratio_scale", "root_scale"):
    chex.assert_trees_all_equal(getattr(got_low, field), getattr(want_low, field))
  chex.assert_trees_all_close(got_low.mu, want_low.mu, rtol=1e-5)
  streams.assert_leafwise_close(got, want, rtol=1e-6)
  # The learning rate is live: halving it halves the next update.
  state.hyperparams["learning_rate"] = jnp.asarray(5e-3)
  half, _ = jax.jit(injected.update)(grads[0], state, params)
  full, _ = jax.jit(_low_bit(mode).update)(grads[0], want_state, params)
  chex.assert_trees_all_close(half, jax.tree.map(lambda u: u / 2, full), rtol=1e-6)


@pytest.mark.parametrize("mode", LOW_BIT_MODES)
def test_low_bit_masked_equals_the_optimizer_on_the_masked_leaves(mode):
  params = _low_bit_params()
  grads = streams.gradient_stream(params, 20, seed=31)
  mask = {"w": True, "layers": [True, False], "head": {"b": False}}
  got, state = streams.reference(optax.masked(_low_bit(mode), mask), grads, params)
  keep = lambda t: {"w": t["w"], "l0": t["layers"][0]}
  want, _ = streams.reference(_low_bit(mode), [keep(g) for g in grads], keep(params))
  chex.assert_trees_all_close(keep(got), want, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(got["head"]["b"][-1], grads[-1]["head"]["b"])
  assert state.inner_state[0].codes["w"].dtype in (jnp.uint16, jnp.uint8)


@pytest.mark.parametrize("mode", LOW_BIT_MODES)
def test_low_bit_multi_steps_equals_the_optimizer_on_mean_gradients(mode):
  params = _low_bit_params()
  grads = streams.gradient_stream(params, 16, seed=32)
  got, _ = streams.reference(optax.MultiSteps(_low_bit(mode), 4), grads, params)
  means = [
    jax.tree.map(lambda *g: sum(g) / 4, *grads[i : i + 4]) for i in range(0, 16, 4)
  ]
  want, _ = streams.reference(_low_bit(mode), means, params)
  moved = np.abs(got["w"]).sum(axis=(1, 2)) > 0
  np.testing.assert_array_equal(moved, np.arange(16) % 4 == 3)
  got = jax.tree.map(lambda u: u[3::4], got)
  chex.assert_trees_all_close(got["head"], want["head"], rtol=1e-5)
  # MultiSteps' running mean is the mean to float rounding, and a value an
  # ulp away draws other rounding bits: low-bit leaves agree to rounding noise
  # (RMS gaps measured 0.007 int8, 0.09 int4).
  for k in ("w", "layers"):
    a, b = (
      np.concatenate([x.ravel() for x in jax.tree.leaves(t[k])]) for t in (got, want)
    )
    gap = np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2))
    assert gap < (0.03 if mode == "int8" else 0.3)


def test_low_bit_partition_equals_each_group_on_its_own():
  params = _low_bit_params()
  grads = streams.gradient_stream(params, 20, seed=33)
  labels = {"w": "int8", "layers": ["int4", "float"], "head": {"b": "float"}}
  tx = optax.partition(
    {
      "int8": _low_bit("int8"),
      "int4": _low_bit("int4"),
      "float": bo.balanced_adam(1e-2, 0.9),
    },
    labels,
  )
  got, state = streams.reference(tx, grads, params)
  for label, pick in (
    ("int8", lambda t: t["w"]),
    ("int4", lambda t: t["layers"][0]),
  ):
    want, _ = streams.reference(_low_bit(label), [pick(g) for g in grads], pick(params))
    chex.assert_trees_all_close(pick(got), want, rtol=1e-6, atol=1e-9)
  want, _ = streams.reference(bo.balanced_adam(1e-2, 0.9), grads, params)
  chex.assert_trees_all_close(got["head"], want["head"], rtol=1e-6)
  moments = bo.moments_from_state(state, 0.9)
  assert moments.mean["w"].shape == (8, 64)
