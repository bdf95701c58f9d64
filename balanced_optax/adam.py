r"""The fused path: balanced Adam in one elementwise pass per leaf."""

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from balanced_optax import _checks, _rounding, _tree, lowbit


class ScaleSafeAdamState(NamedTuple):
  r"""State of ``scale_by_balanced_adam(scale_safe=True)``.

  Attributes:
    count: number of updates taken (int32 scalar).
    mu: EMA of the gradient, as ``optax.ScaleByAdamState.mu``.
    rms: :math:`\sqrt{\text{nu}}`, the root of the EMA of :math:`|g|^2`.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: optax.Updates
  rms: optax.Updates


def _is_static_zero(x) -> bool:
  return isinstance(x, numbers.Real) and x == 0


def _is_static_positive(x) -> bool:
  return isinstance(x, numbers.Real) and float(x) > 0


def scale_by_balanced_adam(
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
) -> optax.GradientTransformation:
  r"""Rescales updates by balanced Adam (:math:`\beta_1 = \beta_2 = \beta`), fused.

  With :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k`:

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) |g_k|^2, \qquad
    u_k = \frac{m_k / c_k}{\sqrt{v_k / c_k + \varepsilon_r} + \varepsilon},

  or with ``nesterov=True`` the numerator
  :math:`\beta m_k / c_{k+1} + (1-\beta) g_k / c_k`. This is
  ``optax.scale_by_adam(b1=beta, b2=beta, eps=eps, eps_root=eps_root,
  nesterov=nesterov)``, state included, in one pass per leaf: one scalar
  :math:`c_k` debiases both moments. See :doc:`guarantees` for dtypes,
  complex params and what differs from optax on purpose.

  Args:
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0.
    eps_root: added inside the square root, >= 0, as ``optax.adam``'s.
    nesterov: use Nesterov momentum [Dozat 2016], as ``optax.adam``'s.
    state_dtype: dtype of the moments (e.g. ``"bfloat16"``); ``None`` uses the
      params' dtype (see :ref:`dtypes`); ``"int8"`` or ``"int4"`` stores large
      leaves' moments in about 2 or 1 bytes per parameter (see :doc:`lowbit`).
    scale_safe: keep :math:`r_k = \sqrt{v_k}` instead of :math:`v_k`, so that
      :math:`g^2` is never formed (see :ref:`scale-safe`).
    guard_nonfinite: hold the debiased moments of coordinates whose gradient
      is NaN or +-Inf (see :ref:`nonfinite-gradients`); ``False`` is
      ``optax.adam``'s behaviour.
    stochastic_rounding: round bfloat16 moments stochastically so that an EMA
      with beta near 1 does not stall (see :ref:`stochastic-rounding`); low-bit
      state always rounds so.
    min_size: low-bit state only: leaves with fewer elements keep float32
      moments (``None``: 4096).
    full_precision_mask: low-bit state only: a tree of bools like the params
      (or a function of the params returning one), True where a leaf keeps
      float32 moments.

  Returns:
    An ``optax.GradientTransformation`` whose state is
    ``optax.ScaleByAdamState`` (:class:`ScaleSafeAdamState` with
    ``scale_safe=True``, :class:`LowBitAdamState` with a low-bit
    ``state_dtype``).

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import balanced_optax as bo
    >>> tx = optax.chain(bo.scale_by_balanced_adam(beta=0.95), optax.scale(-1e-3))
    >>> state = tx.init(jnp.zeros(3))
    >>> updates, state = tx.update(jnp.array([0.1, -2.0, 3.0]), state)
    >>> print(updates)
    [-0.001  0.001 -0.001]
    >>> updates, state = tx.update(jnp.array([jnp.nan, -2.0, 1.0]), state)
    >>> print(updates)  # The NaN coordinate keeps its step.
    [-0.001       0.001      -0.00089216]

  References:
    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2
    <https://arxiv.org/abs/2601.21739>`_, 2026.

    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016.
  """
  state_dtype = _checks.state_dtype_or_none("state_dtype", state_dtype)
  if isinstance(state_dtype, str):  # "int8" or "int4"; floating dtypes are dtypes
    _check_low_bit_options(scale_safe, stochastic_rounding)
    return lowbit.scale_by_balanced_adam_lowbit(
      beta,
      eps,
      eps_root=eps_root,
      nesterov=nesterov,
      state_dtype=state_dtype,
      guard_nonfinite=guard_nonfinite,
      min_size=lowbit.MIN_SIZE if min_size is None else min_size,
      full_precision_mask=full_precision_mask,
    )
  if min_size is not None or full_precision_mask is not None:
    raise ValueError(
      "min_size and full_precision_mask choose which leaves keep float32"
      " moments under a low-bit state_dtype ('int8' or 'int4'); with"
      f" state_dtype={state_dtype!r} every leaf's moments take that dtype."
    )
  _checks.check_beta("beta", beta)
  _checks.check_interval("eps", eps, 0.0)
  _checks.check_interval("eps_root", eps_root, 0.0)

  def init_fn(params):
    mu = _tree.zeros_for_state(params, state_dtype)
    second = _tree.zeros_for_state(params, state_dtype)
    count = jnp.zeros([], jnp.int32)
    if scale_safe:
      return ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  def read(g, m, second, out_dtype):
    # The arithmetic runs in at least float32; a complex second moment (stored
    # so, as optax.adam does) is real-valued.
    dtype = _tree.compute_dtype(jnp.promote_types(out_dtype, m.dtype))
    return g.astype(dtype), m.astype(dtype), jnp.real(second.astype(dtype))

  def new_moments(g, m, second, out_dtype, *, hold):
    g, m, second = read(g, m, second, out_dtype)
    m_new = _tree.ema(beta, g, m)
    if scale_safe:
      # rms_k = sqrt(beta rms_{k-1}^2 + (1-beta) |g|^2) without forming |g|^2:
      # hypot (and the complex abs) rescale by the larger argument.
      second_new = jnp.hypot(jnp.sqrt(1 - beta) * jnp.abs(g), jnp.sqrt(beta) * second)
      second_hold = jnp.sqrt(hold)
    else:
      second_new = _tree.ema(beta, _tree.abs2(g), second)
      second_hold = hold
    if guard_nonfinite:
      m_new = _tree.guard(g, m_new, m, hold)
      second_new = _tree.guard(g, second_new, second, second_hold)
    return m_new, second_new

  def step(g, m, second, out_dtype, *, c, c_next):
    g, m, second = read(g, m, second, out_dtype)
    # Multiplied through by sqrt(c_k), (m/c) / (sqrt(v/c + eps_root) + eps) is
    # (m/sqrt(c)) / (sqrt(v + eps_root c) + eps sqrt(c)): the bias correction
    # moves into scalars, one multiply per element fewer.
    root_c = jnp.sqrt(c)
    if scale_safe:
      root = second
      if not _is_static_zero(eps_root):
        root = jnp.hypot(root, jnp.sqrt(eps_root * c))
    else:
      root = jnp.sqrt(second if _is_static_zero(eps_root) else second + eps_root * c)
    if nesterov:
      # Dozat's look-ahead, as optax.adam(nesterov=True): the only case that
      # reads g again (a held coordinate looks ahead with its held mean).
      if guard_nonfinite:
        g = jnp.where(jnp.isfinite(g), g, m / c)
      numerator = (beta * root_c / c_next) * m + ((1 - beta) / root_c) * g
    else:
      numerator = m * (1 / root_c)
    denom = root + eps * root_c
    if _is_static_positive(eps) or _is_static_positive(eps_root):
      update = numerator / denom  # denom > 0: no select needed.
    else:  # 0/0 (eps = 0, no gradient yet) is a zero step; NaN still propagates.
      update = jnp.where(denom == 0, 0, numerator / jnp.where(denom == 0, 1, denom))
    return update.astype(out_dtype)

  def update_fn(updates, state, params=None):
    second = state.rms if scale_safe else state.nu
    updates, out_dtypes = _tree.gradients(
      "scale_by_balanced_adam", updates, state.mu, params
    )
    out_dtypes = jax.tree.unflatten(jax.tree.structure(updates), out_dtypes)
    count = optax.safe_increment(state.count)
    # A non-finite g counts as the current debiased moments: m_k/c_k stays
    # m_{k-1}/c_{k-1}, one scalar factor per step for every element.
    hold = _tree.hold_factor(beta, count)
    moments = jax.tree.map(
      functools.partial(new_moments, hold=hold), updates, state.mu, second, out_dtypes
    )
    mu, second = _rounding.store_moments(
      _tree.unzip(updates, moments, 2),
      (state.mu, second),
      count=count,
      stochastic=stochastic_rounding,
    )
    # The update reads the moments as stored: then every buffer is written
    # once and read before, so XLA can update donated state in place (reading
    # the pre-store values made XLA:CPU copy m and v every step, 5x slower).
    c = 1 - beta**count  # One bias correction serves both moments.
    c_next = 1 - beta ** optax.safe_increment(count)
    updates = jax.tree.map(
      functools.partial(step, c=c, c_next=c_next), updates, mu, second, out_dtypes
    )
    if scale_safe:
      return updates, ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  return optax.GradientTransformation(init_fn, update_fn)


def _check_low_bit_options(scale_safe: bool, stochastic_rounding: bool) -> None:
  if scale_safe:
    raise ValueError(
      "scale_safe=True keeps sqrt(v) in the state's own dtype; a low-bit"
      " state_dtype ('int8' or 'int4') already stores sqrt(v): pass one or"
      " the other."
    )
  if not stochastic_rounding:
    raise ValueError(
      "stochastic_rounding=False is not available with a low-bit state_dtype"
      " ('int8' or 'int4'): round-to-nearest codes stall once the per-step"
      " change is below half a level (see the Low-bit state docs)."
    )
