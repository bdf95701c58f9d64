r"""Estimators of the gradient's mean and variance with one memory ``beta``.

Both transforms turn gradients into :class:`GradientMoments` (a mean and a
variance pytree, each shaped like the params). They differ only in the state
they keep:

* :func:`tied_moments` keeps Adam's two EMAs, of g and of ``|g|²``, and emits
  ``variance = v̂ - |m̂|²``. Its state is ``optax.ScaleByAdamState``, so it reads
  and writes optax.adam's checkpoints.
* :func:`variance_ema` keeps the mean and the variance themselves, updated by
  the online Gaussian variational-inference rule of [OG25], which has no
  ``v - m²`` cancellation.

Feed either into :func:`balanced_optax.snr_sign_step` to get Adam's direction.

For a complex gradient the mean is the (complex) EMA of g and the variance is
the real, non-negative :math:`E|g - \text{mean}|^2`, so that
:math:`|\text{mean}|^2 + \text{variance}` is Adam's second moment
:math:`E|g|^2` (optax's ``update_moment_per_elem_norm``).

The moments are emitted in at least float32 (float16 and bfloat16 gradients
included: a float16 variance overflows at ``|g| > 256``), and they carry the dtype
the final update must have (optax.adam's: the promotion of the params' and the
gradients' dtypes), which :func:`~balanced_optax.snr_sign_step` casts to.

Composing a chain. The moments are a pair of statistics, not a gradient, so
nothing that acts on gradients may sit between the estimator and the
direction rule: ``optax.chain(variance_ema(b), optax.clip_by_global_norm(1.0),
snr_sign_step())`` would clip the mean and the variance together. Such a
transform rebuilds the moments from their leaves, and
:func:`~balanced_optax.snr_sign_step` rejects rebuilt moments with a
TypeError that says where the transform belongs (transforms that pair the
updates with a params-shaped tree, ``optax.add_decayed_weights`` or
``optax.masked`` placed there, already fail on the tree mismatch):

* clipping (``optax.clip_by_global_norm``, ``optax.clip``) acts on gradients:
  put it *before* the estimator, as in ``optax.chain(clip, adam)``;
* weight decay (``optax.add_decayed_weights``) acts on the direction: put it
  *after* :func:`~balanced_optax.snr_sign_step` and before the learning rate,
  as ``optax.adamw`` does;
* masking: wrap the whole chain in ``optax.masked`` (or ``optax.partition``),
  never a single link of it.

Moments built by hand, ``GradientMoments(mean, variance)``, are always
accepted, also as arguments of a jitted function. To carry an estimator's
output across a ``jax.jit`` boundary into the direction rule on purpose
(which also rebuilds it), pass ``GradientMoments(*moments)``.
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
  """The mean and variance held by Adam's moments ``mu`` (of g) and ``nu`` (of
  ``|g|²``, real in value), in at least float32: debiased at ``count`` with
  ``beta1``, ``beta2`` (``count=None``: as they are), the variance
  ``max(nu - |mean|², 0)``, +inf where ``nu`` overflowed. The one reading of
  an Adam state: :func:`tied_moments` emits it and ``moments_from_state``
  returns it."""
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

  With zero-initialised :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k`
  (or :math:`c_k = 1` when ``debias=False``):

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) |g_k|^2,

    \text{mean}_k = m_k / c_k, \qquad
    \text{variance}_k = \max(v_k / c_k - |\text{mean}_k|^2,\ 0).

  The variance is the EMA-weighted variance of the gradients seen so far; it is
  non-negative in exact arithmetic (Jensen) and clamped at zero against
  rounding. Where :math:`v_k` overflows (``|g| > 1.8e19`` in float32) the variance
  is +inf and the step there 0, as optax.adam's, never NaN. For complex g the
  mean is complex and the variance real, :math:`E|g - \text{mean}|^2`. The
  state is ``optax.ScaleByAdamState(count, mu, nu)`` with exactly
  ``optax.scale_by_adam(b1=beta, b2=beta)``'s meaning (``nu`` complex with zero
  imaginary part for complex params, as optax keeps it).

  The non-finite guard holds a skipped coordinate's *debiased* moments: a NaN
  or +-Inf :math:`g_k` (either part, if complex) acts as if it were the current
  mean, :math:`m_k = m_{k-1} c_k / c_{k-1}` and
  :math:`v_k = v_{k-1} c_k / c_{k-1}` (raw moments held when ``debias=False``),
  so mean and variance stay as they were and the step there keeps its
  direction (zero before the first finite gradient).

  Args:
    beta: memory of both EMAs, in [0, 1). The horizon is 1 / (1 - beta) steps.
    debias: whether to divide out the zero-initialisation bias.
    state_dtype: dtype of ``mu`` and ``nu``; ``None`` uses the params' dtype
      (float32 for float16 params, whose range cannot hold g²). For complex
      params, float32 or float64 name the complex dtype of that precision
      (others raise ValueError at ``init``). The arithmetic always runs in at
      least float32, and the moments are emitted so.
    guard_nonfinite: if True, a coordinate whose gradient is NaN or +-Inf
      keeps its debiased moments (see above); if False, non-finite values
      enter the state as they do in ``optax.adam``.
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
  beta = _tree.real_hyperparameter(beta)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=_tree.zeros_for_state(params, state_dtype),
      nu=_tree.zeros_for_state(params, state_dtype),
    )

  def update_fn(updates, state, params=None):
    _checks.check_same_structure("tied_moments", updates, state.mu)
    updates = _tree.as_arrays(updates)  # Python scalars too, as optax.
    update_dtypes = _tree.update_dtypes(updates, state.mu, params)
    grads = _tree.upcast(updates)
    count = optax.safe_increment(state.count)
    # nu is real; for complex params optax stores it as complex with zero
    # imaginary part. Update its real part: complex arithmetic on an
    # overflowed moment (beta * (inf + 0j)) makes NaN.
    old_mu = _tree.upcast(state.mu)
    old_nu = jax.tree.map(jnp.real, _tree.upcast(state.nu))
    # optax.tree.update_moment(_per_elem_norm) but for beta = 0, where an
    # overflowed (inf) moment must be forgotten, not turned into 0 * inf.
    mu = jax.tree.map(functools.partial(_tree.ema, beta), grads, old_mu)
    nu = jax.tree.map(lambda g, v: _tree.ema(beta, _tree.abs2(g), v), grads, old_nu)
    if guard_nonfinite:
      hold = _tree.hold_factor(beta, count) if debias else 1
      mu = _tree.where_finite(grads, mu, jax.tree.map(lambda m: m * hold, old_mu))
      nu = _tree.where_finite(grads, nu, jax.tree.map(lambda v: v * hold, old_nu))
    store = functools.partial(
      _rounding.store, count=count, stochastic=stochastic_rounding
    )
    new_state = optax.ScaleByAdamState(
      count=count, mu=store(mu, state.mu, salt=0), nu=store(nu, state.nu, salt=1)
    )
    # Emit from the moments as stored, so that donated state updates in place.
    mean, variance = read_adam_moments(
      new_state.mu, new_state.nu, count if debias else None, beta, beta
    )
    return _emit(mean, variance, update_dtypes), new_state

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

  For complex g the mean is complex and :math:`\delta_k^2` is
  :math:`|\delta_k|^2`, so the variance is the real
  :math:`E|g - \text{mean}|^2` (stored in the real dtype of the params'
  precision). The non-finite guard holds the state where g is NaN or +-Inf
  (either part, if complex): mean and variance stay as they were, the same
  held debiased moments as :func:`tied_moments` and the fused path.

  Args:
    beta: memory of the estimate, in [0, 1).
    debias: whether the state holds the bias-corrected mean and variance.
    state_dtype: dtype of the stored mean and variance; ``None`` uses the
      params' dtype (float32 for float16 params). For complex params, float32
      or float64 name the precision (the mean is complex, the variance real).
      The arithmetic always runs in at least float32, and the moments are
      emitted so.
    guard_nonfinite: if True, a coordinate whose gradient is NaN or +-Inf
      keeps its state (mean and variance held); if False they enter the state.
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
    _checks.check_same_structure("variance_ema", updates, state.mean)
    updates = _tree.as_arrays(updates)  # Python scalars too, as optax.
    update_dtypes = _tree.update_dtypes(updates, state.mean, params)
    grads = _tree.upcast(updates)
    count = optax.safe_increment(state.count)
    if debias:
      # alpha_1 = 1 exactly; the clip absorbs float32 rounding of beta**count,
      # which could otherwise push alpha a hair above 1 and the variance below 0.
      alpha = jnp.minimum((1 - beta) / (1 - beta**count), 1)
    else:
      alpha = jnp.asarray(1 - beta)
    old_mean, old_variance = _tree.upcast(state.mean), _tree.upcast(state.variance)
    # (1 - alpha) m + alpha g rather than m + alpha (g - m): g - m overflows
    # for huge gradients of opposite sign, and alpha = 1 gives g exactly.
    mean = jax.tree.map(lambda m, g: (1 - alpha) * m + alpha * g, old_mean, grads)
    if guard_nonfinite:
      mean = _tree.where_finite(grads, mean, old_mean)
    # The same update read off the new mean, g - m_{k-1} = (g - m_k) / (1 - alpha):
    # nothing reads the old mean after the mean is written, so donated state
    # is updated in place. At alpha = 1 the new mean is g and the term is 0.
    weight = jnp.where(alpha < 1, alpha / jnp.where(alpha < 1, 1 - alpha, 1), 0)
    variance = jax.tree.map(
      lambda s, g, m: (1 - alpha) * s + weight * _tree.abs2(g - m),
      old_variance,
      grads,
      mean,
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
    return _emit(mean, variance, update_dtypes), new_state

  return optax.GradientTransformation(init_fn, update_fn)
