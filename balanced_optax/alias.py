"""Balanced Adam optimizers, as chains of the transforms (like optax.alias)."""

from collections.abc import Callable
from typing import Any

import jax
import optax

from balanced_optax import _checks
from balanced_optax.adam import scale_by_balanced_adam


def balanced_adam(
  learning_rate: optax.ScalarOrSchedule,
  beta: jax.typing.ArrayLike = 0.95,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  eps_root: jax.typing.ArrayLike = 0.0,
  nesterov: bool = False,
  state_dtype: jax.typing.DTypeLike | str | None = None,
  scale_safe: bool = False,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
  min_size: int | None = None,
  full_precision_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with its two memories tied: :math:`\beta_1 = \beta_2 = \beta`.

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) |g_k|^2,

    u_k = -\alpha_k \frac{m_k / (1-\beta^k)}
      {\sqrt{v_k / (1-\beta^k) + \varepsilon_r} + \varepsilon}.

  Equal to ``optax.adam(learning_rate, b1=beta, b2=beta, eps=eps,
  eps_root=eps_root, nesterov=nesterov)``, state included (see
  :doc:`guarantees`). Tied, the update is a Signum step shrunk by the
  gradient's signal-to-noise ratio, and it is invariant to first order to a
  slowly drifting gradient scale (see :doc:`math`). ``beta=0.95`` is a good
  default for language models; :doc:`choosing_beta` gives rules. The chain
  is :func:`scale_by_balanced_adam` then ``optax.scale_by_learning_rate``.

  Args:
    learning_rate: a constant >= 0 or an optax schedule.
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0.
    eps_root: added inside the square root, >= 0, as ``optax.adam``'s.
    nesterov: Nesterov momentum, as ``optax.adam(nesterov=True)``.
    state_dtype: dtype of the moments (e.g. ``"bfloat16"``); ``None`` uses the
      params' dtype (see :ref:`dtypes`); ``"int8"`` or ``"int4"``: about 2 or
      1 bytes per parameter (see :doc:`lowbit`).
    scale_safe: keep the second moment in root form (see :ref:`scale-safe`).
    guard_nonfinite: hold the debiased moments of coordinates whose gradient
      is NaN or +-Inf (see :ref:`nonfinite-gradients`).
    stochastic_rounding: round bfloat16 moments stochastically (see
      :ref:`stochastic-rounding`).
    min_size: with low-bit state, leaves with fewer elements keep float32
      moments (``None``: 4096).
    full_precision_mask: with low-bit state, a tree of bools like the params
      (or a function of the params returning one): True keeps that leaf's
      moments in float32. Under ``optax.inject_hyperparams`` a callable goes
      in ``static_args``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import balanced_optax as bo
    >>> def loss(x):
    ...   return jnp.sum((x - 1.0) ** 2)
    >>> opt = bo.balanced_adam(learning_rate=0.1, beta=0.9)
    >>> params = jnp.zeros(3)
    >>> state = opt.init(params)
    >>> for _ in range(100):
    ...   updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(f"{loss(params):.4f}")
    0.0000

  References:
    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2: The
    Missing Gradient Scale Invariance Principle
    <https://arxiv.org/abs/2601.21739>`_, 2026.

    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025.
  """
  _checks.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_balanced_adam(
      beta=beta,
      eps=eps,
      eps_root=eps_root,
      nesterov=nesterov,
      state_dtype=state_dtype,
      scale_safe=scale_safe,
      guard_nonfinite=guard_nonfinite,
      stochastic_rounding=stochastic_rounding,
      min_size=min_size,
      full_precision_mask=full_precision_mask,
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def balanced_adamw(
  learning_rate: optax.ScalarOrSchedule,
  beta: jax.typing.ArrayLike = 0.95,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: optax.ScalarOrSchedule = 1e-4,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  *,
  eps_root: jax.typing.ArrayLike = 0.0,
  nesterov: bool = False,
  state_dtype: jax.typing.DTypeLike | str | None = None,
  scale_safe: bool = False,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
  min_size: int | None = None,
  full_precision_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Balanced Adam with decoupled weight decay (AdamW with beta1 = beta2).

  .. math::

    u_k = -\alpha_k \left(
      \frac{m_k / (1-\beta^k)}{\sqrt{v_k / (1-\beta^k) + \varepsilon_r}
      + \varepsilon} + \lambda \theta_{k-1} \right),

  with :math:`m, v` as in :func:`balanced_adam` and :math:`\lambda` the
  ``weight_decay``. Equal to ``optax.adamw(learning_rate, b1=beta, b2=beta,
  eps=eps, eps_root=eps_root, weight_decay=weight_decay, mask=mask,
  nesterov=nesterov)``. The chain is :func:`scale_by_balanced_adam`,
  ``optax.add_decayed_weights(weight_decay, mask)``,
  ``optax.scale_by_learning_rate(learning_rate)``.

  Args:
    learning_rate: a constant >= 0 or an optax schedule.
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0.
    weight_decay: decoupled weight-decay strength, >= 0 (or a schedule).
    mask: a tree of bools like the params (or a function of the params that
      returns one): True where weight decay applies. Under
      ``optax.inject_hyperparams`` a callable mask goes in ``static_args``.
    eps_root: added inside the square root, >= 0, as ``optax.adamw``'s.
    nesterov: Nesterov momentum, as ``optax.adamw(nesterov=True)``.
    state_dtype: as in :func:`balanced_adam`.
    scale_safe: as in :func:`balanced_adam`.
    guard_nonfinite: as in :func:`balanced_adam`.
    stochastic_rounding: as in :func:`balanced_adam`.
    min_size: as in :func:`balanced_adam`.
    full_precision_mask: as in :func:`balanced_adam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import balanced_optax as bo
    >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    >>> mask = {"w": True, "b": False}  # no decay on biases
    >>> opt = bo.balanced_adamw(1e-3, beta=0.95, weight_decay=0.1, mask=mask)
    >>> state = opt.init(params)
    >>> grads = {"w": jnp.zeros((2, 2)), "b": jnp.ones(2)}
    >>> updates, state = opt.update(grads, state, params)
    >>> print(f"{updates['w'][0, 0]:.6f} {updates['b'][0]:.6f}")
    -0.000100 -0.001000

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2
    <https://arxiv.org/abs/2601.21739>`_, 2026.
  """
  _checks.check_learning_rate(learning_rate)
  direction = scale_by_balanced_adam(
    beta=beta,
    eps=eps,
    eps_root=eps_root,
    nesterov=nesterov,
    state_dtype=state_dtype,
    scale_safe=scale_safe,
    guard_nonfinite=guard_nonfinite,
    stochastic_rounding=stochastic_rounding,
    min_size=min_size,
    full_precision_mask=full_precision_mask,
  )
  if not callable(weight_decay):
    _checks.check_interval("weight_decay", weight_decay, 0.0)
  return optax.chain(
    direction,
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
