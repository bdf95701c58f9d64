r"""Estimators of the gradient's mean and variance with one memory ``beta``.

Both transforms emit :class:`GradientMoments` (a mean and a variance pytree,
each shaped like the params) for :func:`balanced_optax.snr_sign_step`:

* :func:`tied_moments` keeps Adam's two EMAs, of g and of :math:`|g|^2`, in
  ``optax.ScaleByAdamState``, and emits the variance
  :math:`\hat v - |\hat m|^2`;
* :func:`variance_ema` keeps the mean and the variance themselves (Orvieto &
  Gower, 2025), with no :math:`v - m^2` cancellation.

Nothing that maps over gradients may sit between an estimator and the
direction rule: see :ref:`composing-chains`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from balanced_optax import _checks, _rounding, _tree


class GradientMoments(NamedTuple):
  """The gradient's estimated mean and variance, each a pytree like the params.

  Attributes:
    mean: estimated mean of the gradient (complex for complex gradients).
    variance: estimated per-coordinate variance of the gradient, real and
      >= 0; for complex gradients E|g - mean|².
  """

  mean: optax.Updates
  variance: optax.Updates


class VarianceEmaState(NamedTuple):
  """State of :func:`variance_ema`: the current Gaussian estimate of g.

  Attributes:
    count: number of updates taken (int32 scalar).
    mean: current mean estimate (bias-corrected when ``debias=True``).
    variance: current variance estimate (bias-corrected when ``debias=True``),
      real also for complex params.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mean: optax.Updates
  variance: optax.Updates


class EstimatedMoments(GradientMoments):
  """GradientMoments as an estimator emits them (internal, not in the public API).

  ``update_dtypes`` (one per leaf, in the flat order of ``mean``) is the dtype
  of the update the direction rule must return. Flattening and unflattening
  yields :class:`RebuiltMoments`, so the direction rule can tell that a
  transform mapped over the moments on their way to it.
  """

  update_dtypes: tuple[jnp.dtype, ...] | list[jnp.dtype]


class RebuiltMoments(GradientMoments):
  """Estimated moments that were rebuilt from their leaves (by a tree map)."""


def _flatten_with_keys(moments):
  children = (
    (jax.tree_util.GetAttrKey("mean"), moments.mean),
    (jax.tree_util.GetAttrKey("variance"), moments.variance),
  )
  return children, moments.update_dtypes


def _unflatten(update_dtypes, children):
  del update_dtypes
  return RebuiltMoments(*children)


jax.tree_util.register_pytree_with_keys(
  EstimatedMoments,
  _flatten_with_keys,
  _unflatten,
  lambda m: ((m.mean, m.variance), m.update_dtypes),
)


def _emit(mean, variance, update_dtypes) -> EstimatedMoments:
  moments = EstimatedMoments(mean, variance)
  moments.update_dtypes = update_dtypes
  return moments


def _excess(second: jax.Array, mean: jax.Array) -> jax.Array:
  """max(second - |mean|², 0), infinite (not NaN) where second overflowed."""
  # |mean|² <= second, so it can only overflow where second has: inf - inf
  # there would be NaN, and inf is what the moments say (the step is 0, as
  # optax.adam's m̂ / sqrt(inf)).
  return jnp.where(jnp.isinf(second), second, jnp.maximum(second - _tree.abs2(mean), 0))


def read_adam_moments(mu, nu, count, beta1, beta2) -> GradientMoments:
  """Adam's ``mu`` and ``nu`` read as :class:`GradientMoments`, in at least float32.

  The mean is ``mu``, the variance ``max(nu - |mean|², 0)`` (+inf where ``nu``
  overflowed), both debiased at ``count`` with ``beta1``, ``beta2``
  (``count=None``: as they are). The one reading of an Adam state:
  :func:`tied_moments` emits it and ``moments_from_state`` returns it.
  """
  mean = _tree.upcast(mu)
  second = jax.tree.map(jnp.real, _tree.upcast(nu))
  if count is not None:
    mean = otu.bias_correction(mean, beta1, count)
    second = otu.bias_correction(second, beta2, count)
  return GradientMoments(mean, jax.tree.map(_excess, second, mean))


def tied_moments(
  beta: jax.typing.ArrayLike,
  debias: bool = True,
  *,
  state_dtype: jax.typing.DTypeLike | None = None,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
) -> optax.GradientTransformation:
  r"""Adam's two EMAs with one memory, emitted as the gradient's mean and variance.

  With :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k` (:math:`c_k = 1`
  when ``debias=False``):

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) |g_k|^2,

    \text{mean}_k = m_k / c_k, \qquad
    \text{variance}_k = \max(v_k / c_k - |\text{mean}_k|^2,\ 0).

  The state is ``optax.ScaleByAdamState(count, mu, nu)`` with
  ``optax.scale_by_adam(b1=beta, b2=beta)``'s meaning; the variance is
  non-negative in exact arithmetic (Jensen) and clamped at 0 against rounding.

  Args:
    beta: memory of both EMAs, in [0, 1).
    debias: whether to divide out the zero-initialisation bias.
    state_dtype: dtype of the stored moments; ``None`` uses the params' dtype
      (see :ref:`dtypes`).
    guard_nonfinite: hold the debiased moments of coordinates whose gradient
      is NaN or +-Inf (see :ref:`nonfinite-gradients`); ``False`` lets them
      into the state, as ``optax.adam`` does.
    stochastic_rounding: round bfloat16 moments stochastically so that an EMA
      with beta near 1 does not stall (see :ref:`stochastic-rounding`).

  Returns:
    An ``optax.GradientTransformation`` whose updates are
    :class:`GradientMoments`.

  Example:
    >>> import jax.numpy as jnp
    >>> import balanced_optax as bo
    >>> tx = bo.tied_moments(beta=0.5)
    >>> state = tx.init(jnp.zeros(2))
    >>> moments, state = tx.update(jnp.array([1.0, -2.0]), state)
    >>> moments, state = tx.update(jnp.array([3.0, -2.0]), state)
    >>> print(f"{moments.mean[0]:.4f} {moments.variance[0]:.4f}")
    2.3333 0.8889
    >>> print(moments.mean[1], moments.variance[1])  # a constant gradient
    -2.0 0.0

  References:
    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025 (Prop. 1).
  """
  _checks.check_beta("beta", beta)
  beta = _tree.real_hyperparameter(beta)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=_tree.zeros_for_state(params, state_dtype),
      nu=_tree.zeros_for_state(params, state_dtype),
    )

  def update_fn(updates, state, params=None):
    grads, update_dtypes = _tree.gradients("tied_moments", updates, state.mu, params)
    count = optax.safe_increment(state.count)
    # nu is real, stored complex for complex params as optax stores it: complex
    # arithmetic on an overflowed moment (beta * (inf + 0j)) would make NaN.
    g, m, v = _tree.upcast((grads, state.mu, jax.tree.map(jnp.real, state.nu)))
    # optax.tree.update_moment(_per_elem_norm), but an overflowed (inf) moment
    # is forgotten at beta = 0, not turned into 0 * inf.
    mu = jax.tree.map(lambda g, m: _tree.ema(beta, g, m), g, m)
    nu = jax.tree.map(lambda g, v: _tree.ema(beta, _tree.abs2(g), v), g, v)
    if guard_nonfinite:
      hold = _tree.hold_factor(beta, count) if debias else 1
      mu, nu = _tree.guard(g, mu, m, hold), _tree.guard(g, nu, v, hold)
    mu, nu = _rounding.store_moments(
      (mu, nu), (state.mu, state.nu), count=count, stochastic=stochastic_rounding
    )
    # Emit from the moments as stored, so that donated state updates in place.
    mean, variance = read_adam_moments(mu, nu, count if debias else None, beta, beta)
    return _emit(mean, variance, update_dtypes), optax.ScaleByAdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def variance_ema(
  beta: jax.typing.ArrayLike,
  debias: bool = True,
  *,
  state_dtype: jax.typing.DTypeLike | None = None,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
) -> optax.GradientTransformation:
  r"""The gradient's mean and variance as EMAs: Adam's second moment, split.

  With :math:`m_0 = s_0 = 0`, the weight of the newest gradient
  :math:`\alpha = 1 - \beta` and :math:`\delta_k = g_k - m_{k-1}`:

  .. math::

    m_k = m_{k-1} + \alpha \delta_k, \qquad
    s_k = (1-\alpha)(s_{k-1} + \alpha |\delta_k|^2).

  Then :math:`m_k^2 + s_k` is Adam's :math:`v_k` exactly, so :math:`s_k` is the
  variance part of Adam's second moment, accumulated without forming
  :math:`v - m^2` (the online Gaussian variational estimate with
  :math:`\beta = 1/(1+\lambda)`; see :doc:`math`). With ``debias=True``
  :math:`\alpha_k = (1-\beta)/(1-\beta^k)`, so the state holds the debiased
  mean and variance directly.

  Args:
    beta: memory of the estimate, in [0, 1).
    debias: whether the state holds the bias-corrected mean and variance.
    state_dtype: dtype of the stored mean and variance (the variance in its
      real form), as in :func:`tied_moments`.
    guard_nonfinite: as in :func:`tied_moments`.
    stochastic_rounding: as in :func:`tied_moments`.

  Returns:
    An ``optax.GradientTransformation`` whose updates are
    :class:`GradientMoments` and whose state is :class:`VarianceEmaState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import balanced_optax as bo
    >>> tx = bo.variance_ema(beta=0.5)
    >>> state = tx.init(jnp.zeros(2))
    >>> for g in ([1.0, -2.0], [3.0, -2.0]):
    ...   moments, state = tx.update(jnp.array(g), state)
    >>> # The state is the Gaussian estimate itself (tied_moments' numbers),
    >>> print(f"N({state.mean[0]:.4f}, {state.variance[0]:.4f})")
    N(2.3333, 0.8889)
    >>> print(bool((moments.variance == state.variance).all()))  # and is emitted.
    True

  References:
    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025 (Prop. 1, Thm. 4.1).
  """
  _checks.check_beta("beta", beta)
  beta = _tree.real_hyperparameter(beta)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    return VarianceEmaState(
      count=jnp.zeros([], jnp.int32),
      mean=_tree.zeros_for_state(params, state_dtype),
      variance=_tree.zeros_for_state(params, state_dtype, real=True),
    )

  def update_fn(updates, state, params=None):
    grads, update_dtypes = _tree.gradients("variance_ema", updates, state.mean, params)
    count = optax.safe_increment(state.count)
    g, m, s = _tree.upcast((grads, state.mean, state.variance))
    if debias:
      # alpha_1 = 1 exactly, however beta rounds: for a Python float
      # 1 - beta is float64 and beta**count float32, whose ratio is not 1.
      # The clip absorbs the same rounding at later steps.
      alpha = jnp.where(count == 1, 1, jnp.minimum((1 - beta) / (1 - beta**count), 1))
    else:
      alpha = jnp.asarray(1 - beta)
    # (1 - alpha) m + alpha g rather than m + alpha (g - m): g - m overflows
    # for huge gradients of opposite sign, and alpha = 1 gives g exactly.
    mean = jax.tree.map(lambda m, g: (1 - alpha) * m + alpha * g, m, g)
    if guard_nonfinite:
      mean = _tree.guard(g, mean, m)
    # The same update read off the new (guarded) mean, g - m_{k-1} =
    # (g - m_k) / (1 - alpha): nothing reads the old mean after the mean is
    # written, so donated state is updated in place (guarding the mean after
    # this read made XLA copy it). At alpha = 1 the new mean is g, the term 0.
    weight = jnp.where(alpha < 1, alpha / jnp.where(alpha < 1, 1 - alpha, 1), 0)
    variance = jax.tree.map(
      lambda s, g, m: (1 - alpha) * s + weight * _tree.abs2(g - m), s, g, mean
    )
    if guard_nonfinite:
      variance = _tree.guard(g, variance, s)
    mean, variance = _rounding.store_moments(
      (mean, variance),
      (state.mean, state.variance),
      count=count,
      stochastic=stochastic_rounding,
    )
    emitted = _emit(_tree.upcast(mean), _tree.upcast(variance), update_dtypes)
    return emitted, VarianceEmaState(count, mean, variance)

  return optax.GradientTransformation(init_fn, update_fn)
