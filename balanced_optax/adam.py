r"""The fused fast path: balanced Adam in one elementwise pass per leaf.

``scale_by_balanced_adam`` computes exactly what the composed chain
``tied_moments(beta) -> snr_sign_step(eps)`` computes (the tests hold them
equal), as one elementwise pass per leaf that reads (g, m, v) and writes
(update, m, v), with the update read off the moments as stored so that
donated state is updated in place. Tying the betas lets one scalar,
:math:`1/c_k = 1/(1 - \beta^k)`, debias both moments, which leaves one
division per element instead of optax.adam's three.
"""

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from balanced_optax import _checks, _rounding, _tree


class ScaleSafeAdamState(NamedTuple):
  """State of ``scale_by_balanced_adam(scale_safe=True)``.

  Attributes:
    count: number of updates taken (int32 scalar).
    mu: EMA of the gradient, as ``optax.ScaleByAdamState.mu``.
    rms: square root of the EMA of the squared gradient, i.e.
      ``sqrt(optax.ScaleByAdamState.nu)``, kept in root form so that it never
      squares the gradient and cannot under- or overflow where g does not.
  """

  count: jax.Array
  mu: optax.Updates
  rms: optax.Updates


def _new_moments(g, m, second, *, beta, scale_safe, guard_nonfinite):
  """One leaf's new (m, second moment) in float32 or wider."""
  dtype = jnp.promote_types(g.dtype, jnp.float32)
  g32, m32, second32 = g.astype(dtype), m.astype(dtype), second.astype(dtype)
  m_new = (1 - beta) * g32 + beta * m32
  if scale_safe:
    # rms_k = sqrt(beta rms_{k-1}^2 + (1-beta) g^2) without forming g^2:
    # hypot rescales by the larger argument, so only |g| and rms are ever held.
    second_new = jnp.hypot(jnp.sqrt(1 - beta) * g32, jnp.sqrt(beta) * second32)
  else:
    second_new = (1 - beta) * g32 * g32 + beta * second32
  if guard_nonfinite:
    finite = jnp.isfinite(g32)
    m_new = jnp.where(finite, m_new, m32)
    second_new = jnp.where(finite, second_new, second32)
  return m_new, second_new


def _update(g, m, second, *, eps, inv_c, scale_safe, guard_nonfinite):
  """One leaf's update m̂ / (sqrt(v̂) + eps), in g's dtype, from stored moments."""
  dtype = jnp.promote_types(g.dtype, jnp.float32)
  m32, second32 = m.astype(dtype), second.astype(dtype)
  if scale_safe:
    root = second32 * jnp.sqrt(inv_c)
  else:
    root = jnp.sqrt(second32 * inv_c)
  denom = root + eps
  if isinstance(eps, numbers.Real) and eps > 0:  # denom > 0: no select needed.
    update = m32 * inv_c / denom
  else:  # 0/0 (eps = 0, no gradient yet) is a zero step; NaN still propagates.
    update = jnp.where(denom == 0, 0, m32 * inv_c / jnp.where(denom == 0, 1, denom))
  if guard_nonfinite:
    update = jnp.where(jnp.isfinite(g), update, 0)
  return update.astype(g.dtype)


def scale_by_balanced_adam(
  beta: jax.typing.ArrayLike = 0.95,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  state_dtype: jax.typing.DTypeLike | None = None,
  scale_safe: bool = False,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
) -> optax.GradientTransformation:
  r"""Rescales updates by balanced Adam (beta1 = beta2 = beta), fused.

  With :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k`:

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) g_k^2, \qquad
    u_k = \frac{m_k / c_k}{\sqrt{v_k / c_k} + \varepsilon},

  i.e. ``optax.scale_by_adam(b1=beta, b2=beta, eps=eps)``, and equally
  :math:`\operatorname{sign}(\hat m)/\sqrt{1 + \hat\sigma^2/\hat m^2}`: a sign
  step shrunk by the gradient's SNR. With ``scale_safe=False`` the state is
  ``optax.ScaleByAdamState(count, mu, nu)`` with the same meaning as
  ``optax.adam``'s, so checkpoints move between the two in both directions.

  With ``scale_safe=True`` the state keeps :math:`r_k = \sqrt{v_k}` instead,
  updated as :math:`r_k = \operatorname{hypot}(\sqrt{1-\beta}\,g_k,
  \sqrt\beta\, r_{k-1})`, so :math:`g^2` is never formed. The updates are the
  same to float rounding, but with ``eps=0`` they stay invariant to a
  constant gradient scale over float32's whole range (1e-30 .. 1e30), where
  plain Adam's :math:`g^2` under- or overflows. The state is then
  :class:`ScaleSafeAdamState`.

  Args:
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0. ``eps=0`` with zero gradients gives
      zero updates, not NaN.
    state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16`` or
      ``"bfloat16"`` to halve the state); ``None`` uses the params' dtype
      (float32 for float16 params, whose range cannot hold g²). The arithmetic
      runs in at least float32 and updates come back in the gradients' dtype.
    scale_safe: keep the second moment in root form (see above).
    guard_nonfinite: if True, a coordinate whose gradient is NaN or +-Inf keeps
      its moments and gets a zero update (free where XLA fuses a leaf's step
      into one kernel, as on GPU; on CPU the update reads g once more); if
      False, non-finite values enter the state as in ``optax.adam``. To skip a whole
      step instead, wrap the optimizer in ``optax.apply_if_finite``.
    stochastic_rounding: when the moments are stored in bfloat16, round them
      stochastically (unbiased) rather than to nearest, so that an EMA with
      beta near 1 keeps tracking instead of stalling at bfloat16's resolution.
      The bits come from a hash of the step count and the element index:
      reproducible, no key in the state. Ignored for other state dtypes.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import balanced_optax as bo
    >>> tx = optax.chain(bo.scale_by_balanced_adam(beta=0.95), optax.scale(-1e-3))
    >>> state = tx.init(jnp.zeros(3))
    >>> updates, state = tx.update(jnp.array([0.1, -2.0, 3.0]), state)
    >>> print(updates)
    [-0.001  0.001 -0.001]

  References:
    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2: The
    Missing Gradient Scale Invariance Principle
    <https://arxiv.org/abs/2601.21739>`_, 2026.

    Orvieto & Gower, `In Search of Adam's Secret Sauce
    <https://arxiv.org/abs/2505.21829>`_, 2025.
  """
  _checks.check_beta("beta", beta)
  _checks.check_interval("eps", eps, 0.0)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    mu = _tree.zeros_for_state(params, state_dtype)
    second = _tree.zeros_for_state(params, state_dtype)
    count = jnp.zeros([], jnp.int32)
    if scale_safe:
      return ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  def update_fn(updates, state, params=None):
    del params
    _checks.check_same_structure("scale_by_balanced_adam", updates, state.mu)
    count = optax.safe_increment(state.count)
    second = state.rms if scale_safe else state.nu
    new_moments = functools.partial(
      _new_moments, beta=beta, scale_safe=scale_safe, guard_nonfinite=guard_nonfinite
    )
    mu, new_second = _tree.unzip(
      updates, jax.tree.map(new_moments, updates, state.mu, second), 2
    )
    store = functools.partial(
      _rounding.store, count=count, stochastic=stochastic_rounding
    )
    mu, second = store(mu, state.mu, salt=0), store(new_second, second, salt=1)
    # The update reads the moments as stored: then every buffer is written
    # once and read before, so XLA can update donated state in place (reading
    # the pre-store values made XLA:CPU copy m and v every step, 5x slower).
    update = functools.partial(
      _update,
      eps=eps,
      inv_c=1 / (1 - beta**count),  # One bias correction serves both moments.
      scale_safe=scale_safe,
      guard_nonfinite=guard_nonfinite,
    )
    updates = jax.tree.map(update, updates, mu, second)
    if scale_safe:
      return updates, ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  return optax.GradientTransformation(init_fn, update_fn)
