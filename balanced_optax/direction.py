r"""The SNR-adaptive sign step: turns gradient moments into a direction.

Adam's direction is a sign step shrunk by the gradient's signal-to-noise
ratio, :math:`\text{mean}/\sqrt{\text{mean}^2 + \sigma^2}`; :func:`snr_sign_step`
makes the shrinkage a knob (see :doc:`math`).
"""

import numbers

import jax
import jax.numpy as jnp
import optax

from balanced_optax import _checks, _tree
from balanced_optax.moments import (
  EstimatedMoments,
  GradientMoments,
  RebuiltMoments,
)

_REBUILT_MESSAGE = (
  "snr_sign_step got GradientMoments that a transform rebuilt from their leaves "
  "after the estimator (e.g. optax.clip_by_global_norm, optax.scale or "
  "optax.add_decayed_weights placed between tied_moments/variance_ema and "
  "snr_sign_step): it treated the mean and the variance as one gradient. Put "
  "clipping before the estimator, weight decay after snr_sign_step (before the "
  "learning rate), and wrap the whole chain in optax.masked/optax.partition. "
  "To pass an estimator's output across a jax.jit boundary on purpose, give "
  "GradientMoments(*moments)."
)


def _direction(mean, variance, eps, power, out_dtype):
  """sign(mean) * rho^(2p), computed so that 0/0 gives 0 rather than NaN."""
  mean32 = mean.astype(_tree.compute_dtype(mean.dtype))
  variance32 = jnp.real(variance).astype(_tree.real_dtype(mean32.dtype))
  denom = jnp.sqrt(_tree.abs2(mean32) + variance32) + eps
  # mean == 0 is the only way denom can be 0 (with eps = 0); its step is 0.
  positive_eps = isinstance(eps, numbers.Real) and float(eps) > 0
  safe_denom = denom if positive_eps else jnp.where(denom == 0, 1, denom)
  static = isinstance(power, numbers.Real)
  if static and power == 0.5:  # Adam: exactly mean / (sqrt(mean^2 + var) + eps).
    step = mean32 / safe_denom
    if not positive_eps:
      step = jnp.where(denom == 0, 0, step)
  elif static and power == 0:  # Signum.
    step = jnp.sign(mean32)
  else:
    rho = jnp.abs(mean32) / safe_denom
    step = jnp.sign(mean32) * jnp.power(jnp.where(rho > 0, rho, 1), 2 * power)
  return step.astype(out_dtype)


def snr_sign_step(
  eps: jax.typing.ArrayLike = 1e-8,
  power: jax.typing.ArrayLike = 0.5,
) -> optax.GradientTransformation:
  r"""Turns :class:`GradientMoments` into the SNR-adaptive sign direction.

  With :math:`\mu` the mean and :math:`\sigma^2` the variance from
  :func:`tied_moments` or :func:`variance_ema`:

  .. math::

    \rho = \frac{|\mu|}{\sqrt{|\mu|^2 + \sigma^2} + \varepsilon}, \qquad
    d = \operatorname{sign}(\mu)\, \rho^{2p}.

  ``power`` p = 0 is Signum's :math:`\operatorname{sign}(\mu)`, p = 1/2 is
  Adam's :math:`\mu / (\sqrt{\mu^2+\sigma^2} + \varepsilon)` (complex means
  too: see :ref:`complex-params`), p = 1 shrinks by the squared SNR. Where
  :math:`\mu = 0` the direction is 0, also with ``eps=0``. Nothing that maps
  over gradients may sit between the estimator and this rule (see
  :ref:`composing-chains`).

  Args:
    eps: added to the denominator, >= 0 (as Adam's ``eps``).
    power: exponent p in [0, 1]. A Python number picks a specialised kernel for
      0 and 0.5; an array (as ``optax.inject_hyperparams`` passes) uses the
      general formula, which agrees with them to float rounding.

  Returns:
    A stateless ``optax.GradientTransformation`` that takes
    :class:`GradientMoments` and returns a direction pytree like the params:
    in optax.adam's update dtype for an estimator's moments, in the mean's
    dtype for moments built by hand.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import balanced_optax as bo
    >>> tx = optax.chain(
    ...   bo.variance_ema(beta=0.95),
    ...   bo.snr_sign_step(eps=1e-8),
    ...   optax.scale_by_learning_rate(1e-3),
    ... )
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -0.1]), state)
    >>> print(updates)
    [-0.001  0.001]

  References:
    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025 (Section 3).
  """
  _checks.check_interval("eps", eps, 0.0)
  _checks.check_interval("power", power, 0.0, 1.0)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    if isinstance(updates, RebuiltMoments):
      raise TypeError(_REBUILT_MESSAGE)
    if not isinstance(updates, GradientMoments):
      raise TypeError(
        "snr_sign_step expects GradientMoments(mean, variance); put "
        "balanced_optax.tied_moments or balanced_optax.variance_ema before it "
        f"in the chain. Got {type(updates).__name__}."
      )
    _checks.check_same_structure("snr_sign_step", updates.variance, updates.mean)
    means, treedef = jax.tree.flatten(updates.mean)
    variances = treedef.flatten_up_to(updates.variance)
    if isinstance(updates, EstimatedMoments):
      out_dtypes = updates.update_dtypes
    else:
      out_dtypes = tuple(m.dtype for m in means)
    direction = jax.tree.unflatten(
      treedef,
      [
        _direction(m, v, eps, power, d)
        for m, v, d in zip(means, variances, out_dtypes, strict=True)
      ],
    )
    return direction, state

  return optax.GradientTransformation(init_fn, update_fn)
