r"""The fused fast path: balanced Adam in one elementwise pass per leaf.

``scale_by_balanced_adam`` computes exactly what the composed chain
``tied_moments(beta) -> snr_sign_step(eps)`` computes (the tests hold them
equal), as one elementwise pass per leaf that reads (g, m, v) and writes
(update, m, v), with the update read off the moments as stored so that
donated state is updated in place. Tying the betas lets one scalar,
:math:`c_k = 1 - \beta^k`, debias both moments, and it is folded into the
scalars of :math:`(m/\sqrt{c_k}) / (\sqrt{v} + \varepsilon\sqrt{c_k})`, so
the update costs one multiply, one square root and one division per element.
The non-finite guard holds moments instead of re-reading the gradient, so the
guarded step moves the same bytes as ``optax.adam``'s.
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
    rms: square root of the EMA of the squared gradient magnitude, i.e.
      ``sqrt(optax.ScaleByAdamState.nu)``, kept in root form so that it never
      squares the gradient and cannot under- or overflow where g does not.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: optax.Updates
  rms: optax.Updates


def _real_part(x: jax.Array) -> jax.Array:
  # A complex second moment (stored so, as optax.adam does) is real-valued.
  return x.real if jnp.iscomplexobj(x) else x


def _new_moments(g, m, second, out_dtype, *, beta, hold, scale_safe, guard_nonfinite):
  """One leaf's new (m, second moment), computed in at least float32."""
  dtype = _tree.compute_dtype(jnp.promote_types(out_dtype, m.dtype))
  g, m, second = g.astype(dtype), m.astype(dtype), _real_part(second.astype(dtype))
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
    # A non-finite g counts as the current debiased moments: m_k/c_k stays
    # m_{k-1}/c_{k-1}, i.e. the raw moment is rescaled by one scalar.
    finite = jnp.isfinite(g)
    m_new = jnp.where(finite, m_new, hold * m)
    second_new = jnp.where(finite, second_new, second_hold * second)
  return m_new, second_new


def _update(
  g,
  m,
  second,
  out_dtype,
  *,
  beta,
  eps,
  eps_root,
  c,
  c_next,
  nesterov,
  scale_safe,
  guard_nonfinite,
):
  """One leaf's update m̂ / (sqrt(v̂ + eps_root) + eps), from stored moments."""
  dtype = _tree.compute_dtype(jnp.promote_types(out_dtype, m.dtype))
  m, second = m.astype(dtype), _real_part(second.astype(dtype))
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
    g = g.astype(dtype)
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
  state_dtype: jax.typing.DTypeLike | None = None,
  scale_safe: bool = False,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
) -> optax.GradientTransformation:
  r"""Rescales updates by balanced Adam (beta1 = beta2 = beta), fused.

  With :math:`m_0 = v_0 = 0` and :math:`c_k = 1 - \beta^k`:

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \qquad
    v_k = \beta v_{k-1} + (1-\beta) |g_k|^2, \qquad
    u_k = \frac{\hat m_k}{\sqrt{v_k / c_k + \varepsilon_r} + \varepsilon},

  with :math:`\hat m_k = m_k / c_k`, or with ``nesterov=True``
  :math:`\hat m_k = \beta m_k / c_{k+1} + (1-\beta) g_k / c_k`. This is
  ``optax.scale_by_adam(b1=beta, b2=beta, eps=eps, eps_root=eps_root,
  nesterov=nesterov)``, and equally (``eps = eps_root = 0``, no Nesterov)
  :math:`\operatorname{sign}(\hat m)/\sqrt{1 + \hat\sigma^2/|\hat m|^2}`
  with :math:`\hat\sigma^2 = \hat v - |\hat m|^2`: a sign step shrunk by the
  gradient's SNR. With ``scale_safe=False`` the state
  is ``optax.ScaleByAdamState(count, mu, nu)`` with the same meaning as
  ``optax.adam``'s, so checkpoints move between the two in both directions.

  Complex parameters are handled as ``optax.adam`` handles them: ``mu`` is the
  EMA of the complex gradient, ``nu`` the EMA of :math:`|g|^2` (real-valued,
  stored in the complex dtype like optax's), so the update is
  :math:`\hat m / (|\hat m|^2 + \hat\sigma^2)^{1/2}`, the phase
  :math:`\hat m/|\hat m|` shrunk by the SNR, with :math:`\hat\sigma^2 =
  E|g - \hat m|^2`.

  With ``scale_safe=True`` the state keeps :math:`r_k = \sqrt{v_k}` instead,
  updated as :math:`r_k = \operatorname{hypot}(\sqrt{1-\beta}\,|g_k|,
  \sqrt\beta\, r_{k-1})`, so :math:`|g|^2` is never formed. The updates are
  the same to float rounding, but with ``eps=0`` they stay invariant to a
  constant gradient scale over float32's whole range (1e-30 .. 1e30), where
  plain Adam's :math:`g^2` under- or overflows. The state is then
  :class:`ScaleSafeAdamState`. A finite gradient never gives a NaN update on
  either form: where the plain form's :math:`|g|^2` overflows to inf (e.g.
  g = 3e19 in float32), the update is 0, as in ``optax.adam``; the root form
  still gives the true step.

  Non-finite gradients (``guard_nonfinite=True``): where :math:`g_k` is NaN or
  +-Inf (for complex g, in either part), the step counts as if
  :math:`g_k` had been the current debiased mean :math:`\hat m_{k-1}` (and
  :math:`|g_k|^2` the current :math:`\hat v_{k-1}`), so both debiased moments
  are held: :math:`m_k = m_{k-1} c_k / c_{k-1}`, :math:`v_k = v_{k-1} c_k /
  c_{k-1}` (zero before the first finite gradient). That coordinate's update
  is then computed from its held moments like any other: it keeps its last
  step, and before any finite gradient it is zero. The update never reads g
  again, so the guarded step moves the same bytes as ``optax.adam``'s; its
  cost is a compare and a select per moment and element. On finite gradients
  the guard changes nothing. A coordinate whose first finite gradient comes
  at step :math:`k > 1` starts from zero moments under the shared count, so
  its first step is damped by :math:`\sqrt{(1-\beta)/c_k}` (as a
  coordinate of ``optax.adam`` whose gradients were zero until then). To skip
  whole steps instead, wrap the optimizer in ``optax.apply_if_finite``.

  Dtypes: the arithmetic runs in at least float32 (float64 and complex128 stay
  64-bit), and the updates come back in the dtype ``optax.adam``'s would have,
  ``jnp.result_type(grads, params)`` leafwise, e.g. float32 for float32 params
  with bfloat16 gradients. Called without ``params``, the stored first
  moment's dtype stands in for the params' (float32 moments with float16
  gradients read as float16 params); pass ``params`` to make rarer mixes exact.

  Args:
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0. ``eps = eps_root = 0`` with zero
      gradients gives zero updates, not NaN.
    eps_root: added to :math:`\hat v` inside the square root, >= 0, as
      ``optax.adam``'s ``eps_root`` (it keeps the derivative of the update
      finite when differentiating through the optimizer).
    nesterov: use Nesterov momentum (Dozat 2016), as ``optax.adam``'s
      ``nesterov``. This form reads the gradient again in the update.
    state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16`` or
      ``"bfloat16"`` to halve the state); ``None`` uses the params' dtype
      (float32 for float16 params, whose range cannot hold g²). Complex params
      keep complex moments of that precision (float32 -> complex64, float64
      -> complex128; bfloat16 and float16 raise ValueError at ``init``).
    scale_safe: keep the second moment in root form (see above).
    guard_nonfinite: hold the debiased moments of coordinates whose gradient
      is NaN or +-Inf (see above); if False, non-finite values enter the state
      exactly as in ``optax.adam``.
    stochastic_rounding: when the moments are stored in bfloat16, round them
      stochastically (unbiased) rather than to nearest, so that an EMA with
      beta near 1 keeps tracking instead of stalling at bfloat16's resolution.
      The bits come from a hash of the step count and the value rounded:
      reproducible, the same under any sharding or ``shard_map``, no key in
      the state. Ignored for other state dtypes.

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
    >>> updates, state = tx.update(jnp.array([jnp.nan, -2.0, 1.0]), state)
    >>> print(updates)  # The NaN coordinate keeps its step.
    [-0.001       0.001      -0.00089216]

  References:
    The papers on balanced Adam are cited in
    :func:`~balanced_optax.balanced_adam`.

    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016.
  """
  _checks.check_beta("beta", beta)
  _checks.check_interval("eps", eps, 0.0)
  _checks.check_interval("eps_root", eps_root, 0.0)
  state_dtype = _checks.float_dtype_or_none("state_dtype", state_dtype)

  def init_fn(params):
    mu = _tree.zeros_for_state(params, state_dtype)
    second = _tree.zeros_for_state(params, state_dtype)
    count = jnp.zeros([], jnp.int32)
    if scale_safe:
      return ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  def update_fn(updates, state, params=None):
    _checks.check_same_structure("scale_by_balanced_adam", updates, state.mu)
    updates = _tree.as_arrays(updates)  # Python scalars too, as optax.
    # The update's dtype is optax.adam's: that of the grads and params.
    out_dtypes = jax.tree.unflatten(
      jax.tree.structure(updates), _tree.update_dtypes(updates, state.mu, params)
    )
    count = optax.safe_increment(state.count)
    c = 1 - beta**count
    second = state.rms if scale_safe else state.nu
    new_moments = functools.partial(
      _new_moments,
      beta=beta,
      # m_{k-1} c_k / c_{k-1} keeps the debiased mean; one scalar operand
      # keeps the moment kernels as simple as optax.adam's.
      hold=_tree.hold_factor(beta, count),
      scale_safe=scale_safe,
      guard_nonfinite=guard_nonfinite,
    )
    mu, new_second = _tree.unzip(
      updates, jax.tree.map(new_moments, updates, state.mu, second, out_dtypes), 2
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
      beta=beta,
      eps=eps,
      eps_root=eps_root,
      c=c,  # One bias correction serves both moments.
      c_next=1 - beta ** optax.safe_increment(count),
      nesterov=nesterov,
      scale_safe=scale_safe,
      guard_nonfinite=guard_nonfinite,
    )
    updates = jax.tree.map(update, updates, mu, second, out_dtypes)
    if scale_safe:
      return updates, ScaleSafeAdamState(count=count, mu=mu, rms=second)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=second)

  return optax.GradientTransformation(init_fn, update_fn)
