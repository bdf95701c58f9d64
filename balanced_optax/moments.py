r"""Estimators of the gradient's mean and variance with one memory ``beta``.

Both transforms turn gradients into :class:`GradientMoments` (a mean and a
variance pytree, each shaped like the params). They differ only in the state
they keep:

* :func:`tied_moments` keeps Adam's two EMAs, of g and of g², and emits
  ``variance = v̂ - m̂²``. Its state is ``optax.ScaleByAdamState``, so it reads
  and writes optax.adam's checkpoints.
* :func:`variance_ema` keeps the mean and the variance themselves, updated by
  the online Gaussian variational-inference rule of [OG25], which has no
  ``v - m²`` cancellation.

Feed either into :func:`balanced_optax.snr_sign_step` to get Adam's direction.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from balanced_optax import _checks, _rounding, _tree


class GradientMoments(NamedTuple):
  """The gradient's estimated mean and variance, each a pytree like the params.

  Attributes:
    mean: estimated mean of the gradient.
    variance: estimated per-coordinate variance of the gradient (>= 0).
  """

  mean: optax.Updates
  variance: optax.Updates


class VarianceEmaState(NamedTuple):
  """State of :func:`variance_ema`: the current Gaussian estimate of g.

  Attributes:
    count: number of updates taken (int32 scalar).
    mean: current mean estimate (bias-corrected when ``debias=True``).
    variance: current variance estimate (bias-corrected when ``debias=True``).
  """

  count: jax.Array
  mean: optax.Updates
  variance: optax.Updates


def _emit(updates, mean, variance, guard_nonfinite: bool) -> GradientMoments:
  """Moments in the gradients' dtype; zero where the gradient was not finite."""
  if guard_nonfinite:
    zeros = otu.zeros_like(mean)
    mean = _tree.where_finite(updates, mean, zeros)
    variance = _tree.where_finite(updates, variance, zeros)
  return GradientMoments(otu.cast_like(mean, updates), otu.cast_like(variance, updates))


def tied_moments(
  beta: jax.typing.ArrayLike,
  debias: bool = True,
  *,
  state_dtype: jax.typing.DTypeLike | None = None,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
) -> optax.GradientTransformation:
  r"""Adam's two EMAs with one memory, emitted as the gradient's mean and variance.

  With zero-initialised :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k`
  (or :math:`c_k = 1` when ``debias=False``):

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) g_k^2,

    \text{mean}_k = m_k / c_k, \qquad
    \text{variance}_k = \max(v_k / c_k - \text{mean}_k^2,\ 0).

  The variance is the EMA-weighted variance of the gradients seen so far; it is
  non-negative in exact arithmetic (Jensen) and clamped at zero against
  rounding. The state is ``optax.ScaleByAdamState(count, mu, nu)`` with exactly
  ``optax.scale_by_adam(b1=beta, b2=beta)``'s meaning.

  Args:
    beta: memory of both EMAs, in [0, 1). The horizon is 1 / (1 - beta) steps.
    debias: whether to divide out the zero-initialisation bias.
    state_dtype: dtype of ``mu`` and ``nu``; ``None`` uses the params' dtype
      (float32 for float16 params, whose range cannot hold g²). The arithmetic
      always runs in at least float32.
    guard_nonfinite: if True, a coordinate whose gradient is NaN or +-Inf keeps
      its state and emits mean = variance = 0 (so the step there is zero); if
      False, non-finite values enter the state as they do in ``optax.adam``.
    stochastic_rounding: round bfloat16 state stochastically (unbiased), so
      that an EMA with beta near 1 does not stall; see
      :func:`scale_by_balanced_adam`.

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
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=_tree.zeros_for_state(params, state_dtype),
      nu=_tree.zeros_for_state(params, state_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    _checks.check_same_structure("tied_moments", updates, state.mu)
    grads = _tree.upcast(updates)
    count = optax.safe_increment(state.count)
    old_mu, old_nu = _tree.upcast(state.mu), _tree.upcast(state.nu)
    mu = otu.update_moment(grads, old_mu, beta, 1)
    nu = otu.update_moment_per_elem_norm(grads, old_nu, beta, 2)
    if guard_nonfinite:
      mu = _tree.where_finite(grads, mu, old_mu)
      nu = _tree.where_finite(grads, nu, old_nu)
    store = functools.partial(
      _rounding.store, count=count, stochastic=stochastic_rounding
    )
    new_state = optax.ScaleByAdamState(
      count=count, mu=store(mu, state.mu, salt=0), nu=store(nu, state.nu, salt=1)
    )
    # Emit from the moments as stored, so that donated state updates in place.
    mu, nu = _tree.upcast(new_state.mu), _tree.upcast(new_state.nu)
    mean = otu.bias_correction(mu, beta, count) if debias else mu
    second = otu.bias_correction(nu, beta, count) if debias else nu
    variance = jax.tree.map(lambda s, m: jnp.maximum(s - m * m, 0), second, mean)
    return _emit(updates, mean, variance, guard_nonfinite), new_state

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

  With :math:`m_0 = s_0 = 0`, [OG25]'s recursion

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    s_k = \beta s_{k-1} + \beta (1-\beta) (m_{k-1} - g_k)^2

  gives exactly :math:`v_k = m_k^2 + s_k` for Adam's
  :math:`v_k = \beta v_{k-1} + (1-\beta) g_k^2`, so :math:`s_k` is the
  variance part of Adam's second moment, accumulated without ever forming
  :math:`v - m^2`. It is the online Gaussian variational-inference update of
  the gradient's mean and variance with :math:`\beta = 1/(1+\lambda)`.

  Written with the weight of the newest gradient,
  :math:`\alpha = 1 - \beta` and :math:`\delta_k = g_k - m_{k-1}`:

  .. math::

    m_k = m_{k-1} + \alpha \delta_k, \qquad
    s_k = (1-\alpha)(s_{k-1} + \alpha \delta_k^2).

  (Computed as :math:`s_k = (1-\alpha) s_{k-1} + \frac{\alpha}{1-\alpha}
  (g_k - m_k)^2`, the same value read off the new mean.)
  With ``debias=True`` the same recursion runs with
  :math:`\alpha_k = (1-\beta)/(1-\beta^k)` (so :math:`\alpha_1 = 1`), which
  keeps the bias-corrected :math:`\hat m_k = m_k / c_k` and
  :math:`\hat s_k = \hat v_k - \hat m_k^2` directly, again with no
  cancellation; both are non-negative sums of squares.

  Args:
    beta: memory of the estimate, in [0, 1).
    debias: whether the state holds the bias-corrected mean and variance.
    state_dtype: dtype of the stored mean and variance; ``None`` uses the
      params' dtype (float32 for float16 params). The arithmetic always runs
      in at least float32.
    guard_nonfinite: if True, a coordinate whose gradient is NaN or +-Inf keeps
      its state and emits mean = variance = 0; if False they enter the state.
    stochastic_rounding: round bfloat16 state stochastically (unbiased), so
      that an EMA with beta near 1 does not stall; see
      :func:`scale_by_balanced_adam`.

  Returns:
    An ``optax.GradientTransformation`` whose updates are
    :class:`GradientMoments` and whose state is :class:`VarianceEmaState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import balanced_optax as bo
    >>> tx = bo.variance_ema(beta=0.5)
    >>> state = tx.init(jnp.zeros(2))
    >>> moments, state = tx.update(jnp.array([1.0, -2.0]), state)
    >>> moments, state = tx.update(jnp.array([3.0, -2.0]), state)
    >>> print(f"{moments.mean[0]:.4f} {moments.variance[0]:.4f}")
    2.3333 0.8889
    >>> print(moments.mean[1], moments.variance[1])  # a constant gradient
    -2.0 0.0

  References:
    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025 (Prop. 1, Thm. 4.1).
  """
  _checks.check_beta("beta", beta)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    return VarianceEmaState(
      count=jnp.zeros([], jnp.int32),
      mean=_tree.zeros_for_state(params, state_dtype),
      variance=_tree.zeros_for_state(params, state_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    _checks.check_same_structure("variance_ema", updates, state.mean)
    grads = _tree.upcast(updates)
    count = optax.safe_increment(state.count)
    if debias:
      # alpha_1 = 1 exactly; the clip absorbs float32 rounding of beta**count,
      # which could otherwise push alpha a hair above 1 and the variance below 0.
      alpha = jnp.minimum((1 - beta) / (1 - beta**count), 1)
    else:
      alpha = 1 - beta
    old_mean, old_variance = _tree.upcast(state.mean), _tree.upcast(state.variance)
    mean = jax.tree.map(lambda m, g: m + alpha * (g - m), old_mean, grads)
    if guard_nonfinite:
      mean = _tree.where_finite(grads, mean, old_mean)
    # The same update read off the new mean, g - m_{k-1} = (g - m_k) / (1 - alpha):
    # nothing reads the old mean after the mean is written, so donated state
    # is updated in place.
    weight = jnp.where(alpha < 1, alpha / jnp.where(alpha < 1, 1 - alpha, 1), 0)
    variance = jax.tree.map(
      lambda s, g, m: (1 - alpha) * s + weight * (g - m) ** 2, old_variance, grads, mean
    )
    if guard_nonfinite:
      variance = _tree.where_finite(grads, variance, old_variance)
    store = functools.partial(
      _rounding.store, count=count, stochastic=stochastic_rounding
    )
    new_state = VarianceEmaState(
      count=count,
      mean=store(mean, state.mean, salt=0),
      variance=store(variance, state.variance, salt=1),
    )
    mean, variance = _tree.upcast(new_state.mean), _tree.upcast(new_state.variance)
    return _emit(updates, mean, variance, guard_nonfinite), new_state

  return optax.GradientTransformation(init_fn, update_fn)
