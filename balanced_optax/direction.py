r"""The SNR-adaptive sign step: turn gradient moments into a direction.

Adam's direction, written with the gradient's mean and variance
(:math:`\sigma^2`), is a sign step shrunk by the signal-to-noise ratio:

.. math::

  \frac{\text{mean}}{\sqrt{\text{mean}^2 + \sigma^2}}
  = \frac{\operatorname{sign}(\text{mean})}{\sqrt{1 + \sigma^2/\text{mean}^2}}.

:func:`snr_sign_step` makes the amount of shrinkage a knob, ``power``, with
Signum (``power=0``) and Adam (``power=0.5``) as two of its settings.
"""

import numbers

import jax
import jax.numpy as jnp
import optax

from balanced_optax import _checks
from balanced_optax.moments import GradientMoments


def _direction(mean, variance, eps, power):
  """sign(mean) * rho^(2p), computed so that 0/0 gives 0 rather than NaN."""
  dtype = jnp.promote_types(mean.dtype, jnp.float32)
  mean32, variance32 = mean.astype(dtype), variance.astype(dtype)
  denom = jnp.sqrt(mean32 * mean32 + variance32) + eps
  # mean == 0 is the only way denom can be 0 (with eps = 0); its step is 0.
  positive_eps = isinstance(eps, numbers.Real) and eps > 0
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
  return step.astype(mean.dtype)


def snr_sign_step(
  eps: jax.typing.ArrayLike = 1e-8,
  power: jax.typing.ArrayLike = 0.5,
) -> optax.GradientTransformation:
  r"""Turns :class:`GradientMoments` into the SNR-adaptive sign direction.

  With :math:`\mu` the mean and :math:`\sigma^2` the variance from
  :func:`tied_moments` or :func:`variance_ema`:

  .. math::

    \rho = \frac{|\mu|}{\sqrt{\mu^2 + \sigma^2} + \varepsilon}, \qquad
    d = \operatorname{sign}(\mu)\, \rho^{2p}.

  ``power`` p = 0 is Signum's :math:`\operatorname{sign}(\mu)`, p = 1/2 is
  Adam's :math:`\mu / (\sqrt{\mu^2+\sigma^2} + \varepsilon)`, p = 1 shrinks
  by the squared SNR. Where :math:`\mu = 0` the direction is 0, also with
  ``eps=0`` (never NaN). Chain it with ``optax.scale_by_learning_rate``.

  Args:
    eps: added to the denominator, >= 0 (as Adam's ``eps``).
    power: exponent p in [0, 1]. A Python number picks a specialised kernel for
      0 and 0.5; an array (as ``optax.inject_hyperparams`` passes) uses the
      general formula, which agrees with them to float rounding.

  Returns:
    A stateless ``optax.GradientTransformation`` that takes
    :class:`GradientMoments` and returns a direction pytree like the params.

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
    if not isinstance(updates, GradientMoments):
      raise TypeError(
        "snr_sign_step expects GradientMoments(mean, variance); put "
        "balanced_optax.tied_moments or balanced_optax.variance_ema before it "
        f"in the chain. Got {type(updates).__name__}."
      )
    _checks.check_same_structure("snr_sign_step", updates.variance, updates.mean)
    direction = jax.tree.map(
      lambda m, v: _direction(m, v, eps, power), updates.mean, updates.variance
    )
    return direction, state

  return optax.GradientTransformation(init_fn, update_fn)
