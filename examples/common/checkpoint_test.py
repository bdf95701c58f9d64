"""Orbax checkpoints of optimizer states restore bit for bit."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import balanced_optax
from examples.common import optim
from examples.common.checkpoint import Checkpointer
from examples.common.config import TrainConfig

CONFIG = TrainConfig(num_steps=20, warmup_steps=3, weight_decay=0.1, learning_rate=0.01)
# The factory's optimizers, and balanced_optax states beyond optax.adam's.
OPTIMIZERS = {
  **{
    name: lambda name=name: optim.make_optimizer(
      dataclasses.replace(CONFIG, optimizer=name)
    )[0]
    for name in optim.OPTIMIZERS
  },
  "balanced_adam_scale_safe_bfloat16": lambda: balanced_optax.balanced_adam(
    0.01, scale_safe=True, state_dtype=jnp.bfloat16
  ),
  "apply_if_finite_balanced_adam": lambda: optax.apply_if_finite(
    balanced_optax.balanced_adam(0.01), max_consecutive_errors=3
  ),
  # min_size=0: every leaf with an axis keeps low-bit moments (the scalar none).
  **{
    f"balanced_adamw_{mode}_state": lambda mode=mode: balanced_optax.balanced_adamw(
      0.01,
      state_dtype=mode,
      min_size=0,
      full_precision_mask={"dense": {"kernel": False, "bias": True}, "embed": False},
    )
    for mode in ("int8", "int4")
  },
}


def _params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {
    "dense": {"kernel": jax.random.normal(keys[0], (4, 3)), "bias": jnp.zeros(3)},
    "embed": jax.random.normal(keys[1], (5, 4), jnp.bfloat16),
  }


def _grads(step, params):
  key = jax.random.fold_in(jax.random.key(1), step)
  return jax.tree.map(lambda p: jax.random.normal(key, p.shape, p.dtype), params)


def _run(tx, params, opt_state, steps):
  updates_seen = []
  update = jax.jit(tx.update)
  for step in steps:
    updates, opt_state = update(_grads(step, params), opt_state, params)
    params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
    updates_seen.append(updates)
  return params, opt_state, updates_seen


def _assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_restored_optimizer_state_gives_bit_identical_next_updates(name, tmp_path):
  tx = OPTIMIZERS[name]()
  params, opt_state, _ = _run(tx, _params(), tx.init(_params()), range(5))
  checkpointer = Checkpointer(str(tmp_path))
  checkpointer.save(5, {"params": params, "opt_state": opt_state})
  like = {"params": params, "opt_state": opt_state}
  restored = Checkpointer(str(tmp_path)).restore(5, like)  # a fresh process's view
  _assert_bitwise_equal(restored, like)  # NamedTuples, dtypes, values

  continued = _run(tx, params, opt_state, range(5, 10))
  resumed = _run(tx, restored["params"], restored["opt_state"], range(5, 10))
  _assert_bitwise_equal(resumed, continued)


def test_a_low_bit_checkpoint_of_another_layout_is_refused(tmp_path):
  """An int8 state restored into an int4 optimizer's template takes the
  template's dtypes, but keeps the layout it was written with: the update
  refuses it rather than misreading the codes."""
  int8, int4 = (
    balanced_optax.balanced_adam(0.01, state_dtype=mode, min_size=0)
    for mode in ("int8", "int4")
  )
  params = _params()
  _, opt_state, _ = _run(int8, params, int8.init(params), range(3))
  Checkpointer(str(tmp_path)).save(3, opt_state)
  restored = Checkpointer(str(tmp_path)).restore(3, int4.init(params))
  assert restored[0].codes["embed"].dtype == jnp.uint8
  with pytest.raises(ValueError, match="layout"):
    int4.update(_grads(3, params), restored, params)


def test_keeps_the_newest_and_ignores_an_unfinished_save(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (10, 20, 30):
    checkpointer.save(step, {"x": jnp.full(3, step)})
  checkpointer.close()
  # What a save killed before its commit leaves behind.
  os.makedirs(tmp_path / "40.orbax-checkpoint-tmp" / "default")
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  assert checkpointer.latest_step() == 30
  like = {"x": jnp.zeros(3, jnp.int32)}
  np.testing.assert_array_equal(checkpointer.restore_latest(like)[0]["x"], [30, 30, 30])
  checkpointer.save(40, {"x": jnp.full(3, 40)})
  assert sorted(os.listdir(tmp_path)) == ["30", "40"]  # the leftover is gone
  assert Checkpointer(str(tmp_path / "empty")).restore_latest(like) == (like, 0)
