"""The optimizer factory builds each optimizer with the update it names."""

import dataclasses
import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.common import optim
from examples.common.config import TrainConfig

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.5, -0.5])}
GRADS = {"w": jnp.array([[0.1, -0.2], [0.0, 0.3]]), "b": jnp.array([-0.4, 0.2])}
# Constant learning rate (no warmup, no decay), no clipping, no decay: the
# bare directions.
BARE = TrainConfig(
  learning_rate=0.1,
  warmup_steps=0,
  final_lr_fraction=1.0,
  grad_clip_norm=0.0,
  weight_decay=0.0,
  num_steps=10,
)


def first_update(config: TrainConfig):
  tx, _ = optim.make_optimizer(config)
  updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
  return updates


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_builds_every_optimizer_and_steps_downhill(name):
  updates = first_update(dataclasses.replace(BARE, optimizer=name))
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(GRADS), strict=True):
    assert np.all(np.asarray(u) * np.asarray(g) <= 0)  # never uphill
    assert np.any(np.asarray(u) != 0)


def test_first_updates_match_closed_forms():
  g = np.asarray(GRADS["w"])
  lr = BARE.learning_rate
  eps = BARE.eps
  # Adam's (and balanced Adam's) first step: -lr g / (|g| + eps).
  adam = -lr * g / (np.abs(g) + eps)
  for name in ("balanced_adam", "adam"):
    np.testing.assert_allclose(
      first_update(dataclasses.replace(BARE, optimizer=name))["w"], adam, rtol=2e-5
    )
  # Signum: the sign of (1 - b1) g.
  signum = first_update(dataclasses.replace(BARE, optimizer="signum"))["w"]
  np.testing.assert_array_equal(signum, -lr * np.sign(g))
  # RMSprop: g / (sqrt((1 - b2) g^2) + eps).
  rms = first_update(dataclasses.replace(BARE, optimizer="rmsprop"))["w"]
  np.testing.assert_allclose(
    rms, -lr * g / (np.sqrt((1 - BARE.b2) * g**2) + eps), rtol=1e-5
  )
  # SGD with momentum: the first step is -lr g.
  sgd = first_update(dataclasses.replace(BARE, optimizer="sgd"))["w"]
  np.testing.assert_allclose(sgd, -lr * g, rtol=1e-6)


def test_balanced_adam_is_adam_with_tied_betas_over_many_steps():
  config = dataclasses.replace(BARE, beta=0.9, b1=0.9, b2=0.9, weight_decay=0.1)
  txs = [
    optim.make_optimizer(dataclasses.replace(config, optimizer=n))[0]
    for n in ("balanced_adam", "adam")
  ]
  states = [tx.init(PARAMS) for tx in txs]
  for k in range(20):
    grads = jax.tree.map(lambda g, k=k: g * np.cos(k) + 0.01 * k, GRADS)
    outs = [tx.update(grads, s, PARAMS) for tx, s in zip(txs, states, strict=True)]
    states = [s for _, s in outs]
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
      outs[0][0],
      outs[1][0],
    )


def test_weight_decay_skips_vectors_and_clipping_bounds_the_norm():
  config = dataclasses.replace(BARE, optimizer="sgd", momentum=0.0, weight_decay=0.5)
  zero = jax.tree.map(jnp.zeros_like, GRADS)
  tx, _ = optim.make_optimizer(config)
  updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * PARAMS["w"], rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], 0.0)  # biases are not decayed

  clipped = first_update(
    dataclasses.replace(BARE, optimizer="sgd", momentum=0.0, grad_clip_norm=0.1)
  )
  assert float(optax.tree.norm(clipped)) == pytest.approx(0.1 * 0.1, rel=1e-5)


def test_schedule_warms_up_then_decays_to_the_final_fraction():
  config = TrainConfig(
    learning_rate=1.0, warmup_steps=10, num_steps=110, final_lr_fraction=0.1
  )
  schedule = optim.make_schedule(config)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.55)  # halfway down the cosine
  assert float(schedule(110)) == pytest.approx(0.1)


def test_unknown_optimizer_is_an_error():
  with pytest.raises(ValueError, match="optimizer must be one of"):
    optim.make_optimizer(dataclasses.replace(BARE, optimizer="lion"))


def test_docstring_example():
  assert doctest.testmod(optim).failed == 0
