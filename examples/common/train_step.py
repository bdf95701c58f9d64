"""The pure train and eval steps: (state, batch) -> (state, metrics).

The model's structure (``nnx.GraphDef``) is split from its parameters once;
inside the steps ``nnx.merge`` rebuilds a model from the parameters, so the
steps are pure functions of arrays that ``jax.jit`` compiles once, with
explicit shardings and the state's buffers donated.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import balanced_optax

Batch = dict[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[nnx.Module, Batch], dict[str, jax.Array]]


class TrainState(NamedTuple):
  """Everything a checkpoint holds.

  Attributes:
    step: number of updates made (int32 scalar).
    params: the model's parameters, a pure dict (``nnx.to_pure_dict``).
    opt_state: the optimizer's state.
  """

  step: jax.Array
  params: Any
  opt_state: optax.OptState


def tree_rms(tree: Any) -> jax.Array:
  """sqrt(sum of squares / number of entries) over all leaves, in float32."""
  sum_of_squares = optax.tree.norm(optax.tree.cast(tree, jnp.float32), squared=True)
  return jnp.sqrt(sum_of_squares / max(optax.tree.size(tree), 1))


def moment_metrics(
  opt_state: optax.OptState, beta: float, eps: float
) -> dict[str, jax.Array]:
  """balanced_optax's moment statistics, ``moments/``-prefixed ({} without).

  The signal-to-noise statistics of the gradient moments balanced Adam keeps
  (``balanced_optax.moments_from_state`` and ``moment_statistics``): mean
  SNR, the fraction of sign-dominated coordinates, the mean shrinkage of the
  sign step. The median SNR (a sort of the whole model) is left out: these
  run every step.
  """
  moments = balanced_optax.moments_from_state(opt_state, beta)
  if moments is None:
    return {}
  statistics = balanced_optax.moment_statistics(moments, eps, median=False)
  return {f"moments/{k}": v for k, v in statistics.items()}


def make_train_step(
  graphdef: nnx.GraphDef,
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  optimizer_metrics: Callable[[optax.OptState], dict[str, jax.Array]] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Builds ``train_step(state, batch) -> (state, metrics)``.

  Metrics: ``train_loss``, ``learning_rate`` (of this update), ``grad_rms``
  (before clipping), ``update_rms`` and ``update_rms_over_lr`` (the step size
  the optimizer chose per unit learning rate: ~1 for sign-like methods), the
  loss function's auxiliary values and ``optimizer_metrics(new_opt_state)``
  (e.g. :func:`moment_metrics`).
  """

  def train_step(state: TrainState, batch: Batch):
    def loss_of_params(params):
      return loss_fn(nnx.merge(graphdef, params), batch)

    (loss, aux), grads = jax.value_and_grad(loss_of_params, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    learning_rate = schedule(state.step)
    update_rms = tree_rms(updates)
    metrics = {
      "train_loss": loss,
      "learning_rate": learning_rate,
      "grad_rms": tree_rms(grads),
      "update_rms": update_rms,
      # At lr = 0 (first warmup step) the update is 0 too; report 0.
      "update_rms_over_lr": jnp.where(
        learning_rate > 0, update_rms / jnp.maximum(learning_rate, 1e-30), 0.0
      ),
      **aux,
    }
    if optimizer_metrics is not None:
      metrics.update(optimizer_metrics(opt_state))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def make_eval_step(
  graphdef: nnx.GraphDef, eval_fn: EvalFn
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Builds ``eval_step(params, batch) -> sums`` from ``eval_fn(model, batch)``."""

  def eval_step(params, batch: Batch):
    return eval_fn(nnx.merge(graphdef, params), batch)

  return eval_step
