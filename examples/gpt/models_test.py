"""The GPT is causal, and sampling continues text the way the model says."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.gpt import models, sampling

V, L, D = 11, 6, 16


@nnx.jit  # one compile instead of one per initialiser op
def small_gpt() -> models.GPT:
  return models.GPT(V, L, D, num_layers=2, num_heads=2, rngs=nnx.Rngs(0))


def test_logits_never_depend_on_later_positions():
  """d logits[t] / d x[s] is exactly 0 for s > t, and not 0 for s <= t."""
  model = small_gpt()
  x_LxD = model.embed(jax.random.randint(jax.random.key(1), (1, L), 0, V))[0]
  graphdef, params = nnx.split(model)
  logits_LxV = lambda x: nnx.merge(graphdef, params).logits_from_embeddings(x[None])[0]
  jacobian_LxVxLxD = jax.jit(jax.jacobian(logits_LxV))(x_LxD)
  dependence_LxL = np.abs(np.asarray(jacobian_LxVxLxD)).max(axis=(1, 3))
  future = np.triu(np.ones((L, L), bool), k=1)
  np.testing.assert_array_equal(dependence_LxL[future], 0.0)
  assert np.all(dependence_LxL[~future] > 0)


def test_low_temperature_sampling_is_greedy_decoding():
  """The jitted loop equals a plain loop of argmax over the last L tokens,
  through a prompt shorter than L and a text longer than L."""
  model = small_gpt()
  graphdef, params = nnx.split(model)
  prompt = [3, 1, 4]
  logits = jax.jit(lambda ids: model(ids[None])[0, -1])
  expected = list(prompt)
  for _ in range(8):
    expected.append(int(jnp.argmax(logits(jnp.array(expected[-L:])))))
  got = sampling.sample(
    graphdef, params, np.array(prompt), num_chars=8, block_size=L, temperature=1e-6
  )
  assert got.tolist() == expected[len(prompt) :]


def test_sampling_is_a_function_of_the_seed():
  graphdef, params = nnx.split(small_gpt())
  draw = lambda seed: sampling.sample(
    graphdef,
    params,
    np.array([0]),
    num_chars=30,
    block_size=L,
    temperature=1.0,
    seed=seed,
  ).tolist()
  assert draw(0) == draw(0)
  assert draw(0) != draw(1)
  assert all(0 <= i < V for i in draw(0))
