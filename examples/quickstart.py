"""Quickstart: balanced Adam beside optax.adam on scikit-learn's digits.

Trains the same small MLP (flax.nnx) twice, once with
``balanced_optax.balanced_adam`` (beta1 = beta2 = 0.95) and once with
``optax.adam``'s defaults (0.9, 0.999), and prints both results. Runs offline
in seconds on a CPU:

    python examples/quickstart.py [--steps=300] [--learning_rate=3e-3]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import balanced_optax as bo


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, hidden: int = 128):
    self.hidden = nnx.Linear(64, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x_BxD):
    return self.out(jax.nn.relu(self.hidden(x_BxD)))


def load_data(seed: int = 0):
  """Digits scaled to [0, 1], split 80/20 with a fixed permutation."""
  digits = load_digits()
  x, y = digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  split = int(0.8 * len(x))
  return (x[order[:split]], y[order[:split]]), (x[order[split:]], y[order[split:]])


def loss_fn(model, x_BxD, y_B):
  logits_BxC = model(x_BxD)
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean()


@nnx.jit
def train_step(model, optimizer, x_BxD, y_B):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x_BxD, y_B)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, x_BxD, y_B):
  return jnp.mean(jnp.argmax(model(x_BxD), axis=-1) == y_B)


def train(tx, data, steps, batch_size=128, seed=0):
  (x_train, y_train), (x_test, y_test) = data
  model = MLP(nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rng = np.random.default_rng(seed)  # The same batches for every optimizer.
  start = time.perf_counter()
  for _ in range(steps):
    idx = rng.integers(0, len(x_train), batch_size)
    loss = train_step(model, optimizer, x_train[idx], y_train[idx])
  seconds = time.perf_counter() - start
  return {
    "train_loss": float(loss_fn(model, x_train, y_train)),
    "test_accuracy": float(accuracy(model, x_test, y_test)),
    "seconds": seconds,
    "last_batch_loss": float(loss),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--learning_rate", type=float, default=3e-3)
  parser.add_argument("--beta", type=float, default=0.95)
  args = parser.parse_args(argv)

  data = load_data()
  optimizers = {
    f"balanced_adam(beta={args.beta})": bo.balanced_adam(args.learning_rate, args.beta),
    "optax.adam(0.9, 0.999)": optax.adam(args.learning_rate),
  }
  print(f"digits: {len(data[0][0])} train / {len(data[1][0])} test, {args.steps} steps")
  print(f"{'optimizer':<28} {'train loss':>10} {'test acc':>9} {'time (s)':>9}")
  results = {}
  for name, tx in optimizers.items():
    results[name] = r = train(tx, data, args.steps)
    print(
      f"{name:<28} {r['train_loss']:>10.4f} {r['test_accuracy']:>9.3f} "
      f"{r['seconds']:>9.2f}"
    )
  return results


if __name__ == "__main__":
  main()
