"""Optimizer factory: the papers' comparison set, built from config fields.

Every optimizer is the chain

    clip_by_global_norm(grad_clip_norm)   (when grad_clip_norm > 0)
    direction                             (the optimizer proper)
    add_decayed_weights(weight_decay)     (decoupled, on params with ndim >= 2)
    scale_by_learning_rate(schedule)      (linear warmup, then cosine decay)

so runs differ only in the direction:

  =================  =======================================================
  ``balanced_adam``  ``balanced_adamw(beta, eps, state_dtype)``: b1 = b2
  ``adam``           ``optax.adamw(b1, b2, eps)``, untied memories
  ``signum``         sign of an EMA (memory ``b1``) of the gradient
  ``rmsprop``        ``g / (sqrt(EMA_b2(g^2)) + eps)``
  ``sgd``            heavy-ball momentum ``momentum`` (0: plain SGD)
  =================  =======================================================

References:
  Orvieto & Gower, `In Search of Adam's Secret Sauce
  <https://arxiv.org/abs/2505.21829>`_, 2025 (the comparison set).
"""

import jax
import optax

import balanced_optax
from examples.common.config import OPTIMIZERS, TrainConfig

LOW_BIT = ("int8", "int4")


def make_schedule(config: TrainConfig) -> optax.Schedule:
  """Linear warmup from 0 to ``learning_rate``, then cosine decay to
  ``learning_rate * final_lr_fraction`` at ``num_steps``."""
  warmup_steps = min(config.warmup_steps, config.num_steps)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=warmup_steps,
    decay_steps=max(config.num_steps, warmup_steps + 1),
    end_value=config.learning_rate * config.final_lr_fraction,
  )


def decay_mask(params: optax.Params) -> optax.Params:
  """True for matrices and embeddings; biases and norm scales are not decayed."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _direction(config: TrainConfig) -> optax.GradientTransformation:
  if config.optimizer == "signum":
    return optax.chain(optax.ema(config.b1, debias=False), optax.scale_by_sign())
  if config.optimizer == "rmsprop":
    return optax.scale_by_rms(decay=config.b2, eps=config.eps, eps_in_sqrt=False)
  if config.optimizer == "sgd":
    return optax.trace(decay=config.momentum) if config.momentum else optax.identity()
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")


def make_optimizer(
  config: TrainConfig,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer named by ``config.optimizer`` and its schedule.

  Args:
    config: a :class:`TrainConfig` (uses the optimizer and schedule fields).

  Returns:
    ``(tx, schedule)``; ``schedule(step)`` is the learning rate of the update
    made at ``step`` (counted from 0), for logging.

  Example:
    >>> import jax.numpy as jnp
    >>> from examples.common.config import TrainConfig
    >>> config = TrainConfig(optimizer="signum", warmup_steps=0, grad_clip_norm=0)
    >>> tx, schedule = make_optimizer(config)
    >>> params = {"w": jnp.ones(3)}
    >>> grads = {"w": jnp.array([0.5, -2.0, 0.0])}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> print([f"{u:+.4f}" for u in updates["w"].tolist()])  # -lr sign(g)
    ['-0.0010', '+0.0010', '-0.0000']
  """
  schedule = make_schedule(config)
  if config.optimizer == "balanced_adam":
    core = balanced_optax.balanced_adamw(
      schedule,
      config.beta,
      config.eps,
      config.weight_decay,
      decay_mask,
      state_dtype=config.state_dtype,
      min_size=config.state_min_size if config.state_dtype in LOW_BIT else None,
    )
  elif config.optimizer == "adam":
    core = optax.adamw(
      schedule,
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
      weight_decay=config.weight_decay,
      mask=decay_mask,
    )
  else:
    core = optax.chain(
      _direction(config),
      optax.add_decayed_weights(config.weight_decay, decay_mask),
      optax.scale_by_learning_rate(schedule),
    )
  if config.grad_clip_norm > 0:
    core = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), core)
  return core, schedule
