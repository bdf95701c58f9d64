r"""Choosing beta: closed-form rules that give the memory units of steps.

The memory horizon :math:`H_\beta = 1/(1-\beta)` and the half-life; [FH26b]'s
refresh rule :math:`(1-\beta)\,T_{ES} = R` with :math:`T_{ES}` read off a
validation curve, and its sweep grid :data:`BETA_GRID`; [FH26c]'s noise/lag
rule and tracking risk; [B23]'s batch rule :math:`\beta \to \beta^\kappa`;
[Z22]'s convergence region. The rules take floats or NumPy arrays (elementwise,
broadcast) and return a float for scalar input; bad input raises a
``ValueError`` naming the argument, and no rule returns :math:`\beta = 1`. See
:doc:`choosing_beta` for the rules, their derivations and their edge cases.

Example:
  >>> import balanced_optax as bo
  >>> print(len(bo.BETA_GRID), bo.BETA_GRID[2:8])
  13 (0.68377, 0.82217, 0.9, 0.94377, 0.96838, 0.98222)
  >>> print(round(bo.memory_horizon(bo.BETA_GRID[5]), 3))
  17.784

References:
  [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
  Adam, arXiv 2605.10119, 2026.

  [FH26c] Fernandez-Hernandez et al., Early Memory Selection for Balanced
  Adam, 2026.

  [B23] Busbridge et al., How to Scale Your EMA, NeurIPS 2023.

  [Z22] Zhang et al., Adam Can Converge Without Any Modification on Update
  Rules, arXiv 2208.09632, NeurIPS 2022.
"""

import math
from collections.abc import Sequence

import numpy as np

from balanced_optax import _checks

ArrayLike = float | np.ndarray | Sequence[float]


BETA_GRID: tuple[float, ...] = (
  0.0, 0.43766, 0.68377, 0.82217, 0.9, 0.94377, 0.96838, 0.98222, 0.99,
  0.99438, 0.99684, 0.99822, 0.999,
)  # fmt: skip
r"""[FH26b]'s sweep grid of 13 memories, :math:`1 - \beta = 10^{-k/4}`, k = 0..12.

The values [FH26b] publishes and snapped to, 1 - 10^(-k/4) rounded to 5
decimals (0, 0.43766, 0.68377, ..., 0.999): their stability intervals are
midpoints of these, not of the exact values, and ``beta_from_refresh``
reproduces them (see :doc:`choosing_beta`).
"""


def snap_beta(
  beta: ArrayLike, grid: Sequence[float] | np.ndarray = BETA_GRID
) -> float | np.ndarray:
  r"""The grid value nearest to ``beta`` in beta distance, ties to the smaller.

  .. math::

    \operatorname{snap}(\beta) = \min \operatorname*{arg\,min}_{g \in G}
    |\beta - g|.

  Args:
    beta: memory in [0, 1), a float or an array (snapped elementwise).
    grid: the candidate memories, a non-empty 1-D sequence in [0, 1), in any
      order (default :data:`BETA_GRID`).

  Returns:
    The snapped beta, a float for scalar input, an array of ``beta``'s shape
    otherwise.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.snap_beta(0.95), 5), round(bo.snap_beta(0.975), 5))
    0.94377 0.96838
    >>> print(bo.snap_beta([0.5, 0.97], grid=(0.9, 0.99)))
    [0.9  0.99]

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  b = _checks.unit_interval("beta", beta)
  return _checks.float_or_array(_nearest(b, _checks.beta_grid("grid", grid)))


def _nearest(beta: np.ndarray, sorted_grid: np.ndarray) -> np.ndarray:
  # argmin returns the first minimum, which in a sorted grid is the smaller value.
  nearest = np.argmin(np.abs(beta[..., None] - sorted_grid), axis=-1)
  return sorted_grid[nearest]


def memory_horizon(beta: ArrayLike) -> float | np.ndarray:
  r"""The memory horizon of an EMA in steps: its weights' mean age plus one.

  .. math::

    H_\beta = \frac{1}{1-\beta} = 1 + \sum_{j \ge 0} (1-\beta)\beta^j\, j.

  Args:
    beta: EMA memory in [0, 1), a float or an array.

  Returns:
    :math:`1/(1-\beta)`, a float (or an array for array input).

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.memory_horizon(0.95), 6))
    20.0
  """
  return _checks.float_or_array(1.0 / (1.0 - _checks.unit_interval("beta", beta)))


def half_life(beta: ArrayLike) -> float | np.ndarray:
  r"""Steps after which an EMA weight has halved (0 for ``beta = 0``).

  .. math::

    \beta^{h} = \tfrac{1}{2} \iff h = \frac{\ln(1/2)}{\ln\beta}
    \approx 0.693\, H_\beta \quad (\beta \to 1).

  Args:
    beta: EMA memory in [0, 1), a float or an array.

  Returns:
    The half-life in steps (not rounded), a float or an array.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.half_life(0.95), 3))
    13.513
  """
  b = _checks.unit_interval("beta", beta)
  with np.errstate(divide="ignore"):  # log(0) = -inf gives a half-life of 0.
    return _checks.float_or_array(np.log(0.5) / np.log(b))


def beta_from_half_life(steps: ArrayLike) -> float | np.ndarray:
  r"""The EMA memory whose half-life is ``steps``, the inverse of :func:`half_life`.

  .. math::

    \beta = 2^{-1/h}.

  Args:
    steps: half-life in steps, in (0, inf), a float or an array.

  Returns:
    :math:`\beta \in [0, 1)`, a float or an array (0.0 below about 1/1074
    steps, where :math:`2^{-1/h}` underflows float64).

  Raises:
    ValueError: if ``steps`` is out of range, or so long (above about
      :math:`6 \times 10^{15}`) that :math:`\beta` rounds to 1.0 in float64.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.beta_from_half_life(13.513), 4))
    0.95
  """
  s = _checks.in_interval("steps", steps, 0.0, low_open=True)
  beta = np.exp2(-1.0 / s)
  return _checks.float_or_array(
    _checks.below_one(beta, f"beta_from_half_life(steps={steps!r})")
  )


def refresh_count(beta: ArrayLike, t_es: ArrayLike) -> float | np.ndarray:
  r"""[FH26b]'s refresh count: memory horizons in the useful phase of training.

  .. math::

    R_\beta = (1-\beta)\, T_{ES} = T_{ES} / H_\beta.

  Args:
    beta: EMA memory in [0, 1).
    t_es: effective learning horizon in steps, > 0 (see
      :func:`estimate_effective_horizon`).

  Returns:
    :math:`R_\beta`, a float or an array (broadcast over the inputs).

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.refresh_count(0.95, 20_000), 6))
    1000.0

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  b = _checks.unit_interval("beta", beta)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
  _checks.broadcastable(beta=b, t_es=t)
  return _checks.float_or_array((1.0 - b) * t)


def beta_from_refresh(
  t_es: ArrayLike,
  refresh: ArrayLike = 1000,
  grid: Sequence[float] | np.ndarray | None = None,
  *,
  beta_range: tuple[float, float] | None = None,
) -> float | np.ndarray:
  r"""[FH26b]'s refresh rule: the beta with :math:`R_\beta` = ``refresh``.

  .. math::

    \beta = \operatorname{snap}_G\Bigl(
      \operatorname{clip}\bigl(\max(0,\ 1 - R / T_{ES}),\ \beta_{lo},
      \beta_{hi}\bigr)\Bigr).

  With ``grid=BETA_GRID`` it returns [FH26b]'s published selections. A run
  with :math:`T_{ES} \le R` gets :math:`\beta = 0`, a case [FH26b] never
  tested; ``beta_range=(0.68377, 0.999)`` floors it at [FH26c]'s range (see
  :doc:`choosing_beta`).

  Args:
    t_es: effective learning horizon in steps, in (0, inf) (see
      :func:`estimate_effective_horizon`); a float or an array.
    refresh: the target refresh count R, in (0, inf) (default 1000 as in
      [FH26b]).
    grid: memories to round the result to (as :func:`snap_beta`), e.g.
      ``BETA_GRID``; default None (no rounding).
    beta_range: optional ``(low, high)`` with ``0 <= low <= high < 1``: the
      continuous beta is clipped to it, and only the ``grid`` values within
      1e-5 of it are candidates.

  Returns:
    :math:`\beta \in [0, 1)`, a float or an array (broadcast over the inputs).

  Raises:
    ValueError: for an argument out of range, a continuous beta that rounds to
      1.0 (``t_es / refresh`` above :math:`2^{53}`: pass ``grid`` or
      ``beta_range``), or no grid value in ``beta_range``.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.beta_from_refresh(t_es=50_000), 6))
    0.98
    >>> print(bo.beta_from_refresh([6000, 20_000, 40_000], grid=bo.BETA_GRID).round(3))
    [0.822 0.944 0.968]
    >>> print(
    ...   bo.beta_from_refresh(500),
    ...   bo.beta_from_refresh(500, beta_range=(0.68377, 0.999)),
    ... )
    0.0 0.68377

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  r = _checks.in_interval("refresh", refresh, 0.0, low_open=True)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
  _checks.broadcastable(t_es=t, refresh=r)
  beta = np.maximum(0.0, 1.0 - r / t)
  if beta_range is not None:
    low, high = _checks.beta_range("beta_range", beta_range)
    beta = np.clip(beta, low, high)
  if grid is not None:
    if beta_range is None:
      candidates = _checks.beta_grid("grid", grid)
    else:
      candidates = _checks.grid_in_range("grid", grid, low, high)
    beta = _nearest(beta, candidates)
  _checks.below_one(beta, f"beta_from_refresh(t_es={t_es!r}, refresh={refresh!r})")
  return _checks.float_or_array(beta)


def _retained_noise(beta: np.ndarray, t: np.ndarray) -> np.ndarray:
  """c(beta, t) = sum_k w(k)^2; 1 at beta = 0 or t = 1."""
  with np.errstate(divide="ignore", invalid="ignore"):
    # 1 - beta^t as -expm1(t log beta): beta^t itself rounds to 1 near beta = 1.
    unseen = -np.expm1(t * np.log(beta))
    c = (1.0 - beta) / (1.0 + beta) * (2.0 - unseen) / unseen
  return np.where((beta == 0.0) | (t == 1.0), 1.0, c)


def _excess(z: np.ndarray) -> np.ndarray:
  """1/expm1(z) - 1/z + 1/2 for z > 0, by its Bernoulli series below 0.1."""
  z2 = z * z
  series = z * (1 / 12 - z2 * (1 / 720 - z2 * (1 / 30240 - z2 / 1209600)))
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    direct = 1.0 / np.expm1(z) - 1.0 / z + 0.5
  return np.where(z < 0.1, series, direct)


def _mean_age(beta: np.ndarray, t: np.ndarray) -> np.ndarray:
  """a(beta, t) = sum_k k w(k); 0 at beta = 0 or t = 1."""
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    s = -np.log(beta)
    # a = 1/expm1(s) - t/expm1(ts). Where ts < 1 both terms are near 1/s and
    # cancel; subtracting their series' 1/s - 1/2 by hand leaves small terms.
    short = (t - 1.0) / 2.0 + _excess(s) - t * _excess(t * s)
    tail = np.where(np.isinf(t), 0.0, t * np.exp(-t * s) / -np.expm1(-t * s))
    a = np.where(t * s < 1.0, short, beta / (1.0 - beta) - tail)
  return np.where((beta == 0.0) | (t == 1.0), 0.0, a)


def tracking_risk(
  beta: ArrayLike, t: ArrayLike, noise: ArrayLike, change: ArrayLike
) -> float | np.ndarray:
  r"""[FH26c]'s tracking risk of an EMA over ``t`` observations.

  With the bias-corrected weights :math:`w(k) = (1-\beta)\beta^k / (1-\beta^t)`
  over ages :math:`k = 0, \dots, t-1`, the noise the average retains plus its
  squared delay:

  .. math::

    V c + D a^2, \qquad
    c = \sum_k w(k)^2 = \frac{1-\beta}{1+\beta}\,\frac{1+\beta^t}{1-\beta^t},
    \qquad
    a = \sum_k k\, w(k) = \frac{\beta}{1-\beta} - \frac{t\,\beta^t}{1-\beta^t}.

  ``t = inf`` gives the long-history risk :math:`V/(2H-1) + D(H-1)^2` with
  :math:`H = 1/(1-\beta)`. Evaluated without cancellation, also near
  :math:`\beta = 1`.

  Args:
    beta: EMA memory in [0, 1).
    t: number of observations averaged, in [1, inf] (``np.inf`` allowed).
    noise: :math:`V \ge 0`, the direction's noise per observation.
    change: :math:`D \ge 0`, the direction's squared change per update.

  Returns:
    The risk, a float for scalar inputs, else an array (inputs broadcast).

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.tracking_risk(0.0, 10, noise=0.18, change=4e-6), 6))
    0.18
    >>> print(round(bo.tracking_risk(0.95537, 200, 0.18, 4e-6), 6))
    0.005939

  References:
    [FH26c] Fernandez-Hernandez et al., Early Memory Selection for Balanced
    Adam, 2026.
  """
  b = _checks.in_interval("beta", beta, 0.0, 1.0, high_open=True)
  t = _checks.real_array("t", t, "a number in [1, inf]").astype(np.float64)
  if not np.all(t >= 1.0):  # NaN fails too.
    raise ValueError(f"t must be in [1, inf], got {t!r}.")
  v = _checks.in_interval("noise", noise, 0.0, math.inf, high_open=True)
  d = _checks.in_interval("change", change, 0.0, math.inf, high_open=True)
  _checks.broadcastable(beta=b, t=t, noise=v, change=d)
  return _checks.float_or_array(v * _retained_noise(b, t) + d * _mean_age(b, t) ** 2)


def beta_from_noise_and_lag(
  noise: ArrayLike,
  change: ArrayLike,
  *,
  beta_range: tuple[float, float] = (0.68377, 0.999),
  grid: Sequence[float] | np.ndarray | None = BETA_GRID,
) -> float | np.ndarray:
  r"""[FH26c]'s cubic memory rule: the beta that balances noise against lag.

  .. math::

    H^* = \operatorname*{arg\,min}_H \frac{V}{2H} + D H^2
        = \Big(\frac{V}{4D}\Big)^{1/3}, \qquad \beta = 1 - 1/H^*,

  with :math:`H^*` clipped to :math:`[1/(1-\beta_{lo}), 1/(1-\beta_{hi})]`,
  then snapped (as :func:`snap_beta`) to the ``grid`` values in
  ``beta_range``. :math:`D = 0 < V` gives the longest memory; :math:`V = 0`
  the shortest (see :doc:`choosing_beta`).

  Args:
    noise: :math:`V \ge 0`, the direction's noise per observation.
    change: :math:`D \ge 0`, its squared change per update.
    beta_range: ``(low, high)``, ``0 <= low <= high < 1``: the memories
      allowed.
    grid: memories to snap to (values in [0, 1); those within 1e-5 of
      ``beta_range`` are used), or None for the continuous beta.

  Returns:
    The memory :math:`\beta`, a float for scalar inputs, else an array.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.beta_from_noise_and_lag(0.18, 4e-6, grid=None), 5))
    0.95537
    >>> print(round(bo.beta_from_noise_and_lag(0.18, 4e-6), 5))
    0.94377
    >>> print(bo.beta_from_noise_and_lag(0.18, 0.0))
    0.999

  References:
    [FH26c] Fernandez-Hernandez et al., Early Memory Selection for Balanced
    Adam, 2026.
  """
  v = _checks.in_interval("noise", noise, 0.0, math.inf, high_open=True)
  d = _checks.in_interval("change", change, 0.0, math.inf, high_open=True)
  _checks.broadcastable(noise=v, change=d)
  low, high = _checks.beta_range("beta_range", beta_range)
  candidates = None if grid is None else _checks.grid_in_range("grid", grid, low, high)
  h_low, h_high = 1.0 / (1.0 - low), 1.0 / (1.0 - high)
  v, d = np.broadcast_arrays(v, d)
  with np.errstate(divide="ignore", invalid="ignore"):
    h = np.cbrt(v / (4.0 * d))
  # Both zero: every memory has zero risk; the shortest reacts fastest to a
  # change the measurement did not see.
  h = np.where(d == 0.0, np.where(v > 0.0, h_high, h_low), h)
  beta = 1.0 - 1.0 / np.clip(h, h_low, h_high)
  if candidates is not None:
    beta = _nearest(beta, candidates)
  return _checks.float_or_array(beta)


def scale_beta_for_batch(beta: ArrayLike, kappa: ArrayLike) -> float | np.ndarray:
  r"""[B23]'s EMA scaling rule: the same memory in samples for a larger batch.

  .. math::

    \beta_{\kappa B} = \beta_B^{\,\kappa}.

  Args:
    beta: EMA memory in [0, 1).
    kappa: batch-size multiplier, in (0, inf) (below 1 for smaller batches).

  Returns:
    :math:`\beta^\kappa \in [0, 1)`, a float or an array.

  Raises:
    ValueError: if an argument is out of range, or if :math:`\kappa` is so
      small that :math:`\beta^\kappa` rounds to 1.0 in float64 (e.g.
      ``scale_beta_for_batch(0.5, 1e-30)``).

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.scale_beta_for_batch(0.99, kappa=4), 6))
    0.960596

  References:
    [B23] Busbridge et al., How to Scale Your EMA, NeurIPS 2023.
  """
  b = _checks.unit_interval("beta", beta)
  k = _checks.in_interval("kappa", kappa, 0.0, low_open=True)
  _checks.broadcastable(beta=b, kappa=k)
  scaled = b**k
  return _checks.float_or_array(
    _checks.below_one(scaled, f"scale_beta_for_batch(beta={beta!r}, kappa={kappa!r})")
  )


def _scalar_beta(name: str, value: float) -> float:
  beta = _checks.unit_interval(name, value)
  if beta.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {beta.shape}.")
  return float(beta)


def in_convergence_region(
  beta1: float, beta2: float, beta2_critical: float | None = None
) -> tuple[bool, str]:
  r"""Whether (beta1, beta2) lies in [Z22]'s convergence region, and why.

  .. math::

    \beta_2 \ge \beta_2^* \quad\text{and}\quad \beta_1 < \sqrt{\beta_2},

  with :math:`\beta_2^*` problem-dependent: checked only when
  ``beta2_critical`` is given, otherwise the reason says it is unchecked and
  the bool reflects :math:`\beta_1 < \sqrt{\beta_2}` alone (see
  :doc:`choosing_beta`).

  Args:
    beta1: first-moment memory in [0, 1) (a scalar).
    beta2: second-moment memory in [0, 1) (a scalar).
    beta2_critical: the problem's :math:`\beta_2^*` in [0, 1), if known.

  Returns:
    ``(ok, reason)``: ``ok`` is True when every checkable condition holds;
    ``reason`` states which conditions hold or fail, with the numbers.

  Example:
    >>> import balanced_optax as bo
    >>> ok, reason = bo.in_convergence_region(0.95, 0.95, beta2_critical=0.9)
    >>> print(ok, "|", reason)
    True | beta1 = 0.95 < sqrt(beta2) = 0.974679; beta2 = 0.95 >= beta2* = 0.9.

  References:
    [Z22] Zhang et al., Adam Can Converge Without Any Modification on Update
    Rules, arXiv 2208.09632, NeurIPS 2022.
  """
  b1, b2 = _scalar_beta("beta1", beta1), _scalar_beta("beta2", beta2)
  root = math.sqrt(b2)
  failures, holds = [], []
  if b1 < root:
    holds.append(f"beta1 = {b1:g} < sqrt(beta2) = {root:.6g}")
  elif b1 > 0:
    failures.append(
      f"beta1 = {b1:g} >= sqrt(beta2) = {root:.6g} (lower beta1 below"
      f" {root:.6g} or raise beta2 above beta1^2 = {b1 * b1:.6g})"
    )
  else:  # beta1 = beta2 = 0: beta1 cannot go lower, only beta2 can move.
    failures.append(
      "beta1 = 0 >= sqrt(beta2) = 0 (raise beta2 above 0; no beta1 in [0, 1)"
      " is below sqrt(0))"
    )
  if beta2_critical is not None:
    b2c = _scalar_beta("beta2_critical", beta2_critical)
    if b2 >= b2c:
      holds.append(f"beta2 = {b2:g} >= beta2* = {b2c:g}")
    else:
      failures.append(
        f"beta2 = {b2:g} < beta2* = {b2c:g}, where Adam can diverge (raise beta2)"
      )
  parts = [f"Outside [Z22]'s region: {'; '.join(failures)}."] if failures else []
  if holds:
    parts.append(("Holds: " if failures else "") + "; ".join(holds) + ".")
  if beta2_critical is None:
    parts.append(
      f"Unchecked: beta2* is problem-dependent and not given; beta2 = {b2:g}"
      " must also exceed it (it rises as the batch shrinks; 0.999-0.9995"
      " reported for small batches)."
    )
  return not failures, " ".join(parts)


def _running_median(x: np.ndarray, half_width: int) -> np.ndarray:
  """Centred running median over 2 * half_width + 1 points.

  At the start the window shrinks symmetrically, so each point stays the
  centre of its window: the steep early part of a curve is not cut off and a
  monotone start is returned unchanged. At the end the window stays full (the
  last 2h + 1 points), because there the curve is flattest and its noise
  decides the minimum.
  """
  n = len(x)
  h = min(half_width, (n - 1) // 2)
  out = np.empty(n)
  windows = np.lib.stride_tricks.sliding_window_view(x, 2 * h + 1)
  out[h : n - h] = np.median(windows, axis=1)
  out[n - h :] = out[n - h - 1]
  for i in range(h):
    out[i] = np.median(x[: 2 * i + 1])
  return out


def _checked_curve(
  val_losses: Sequence[float] | np.ndarray,
  steps: Sequence[float] | np.ndarray | None,
  window: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
  """(losses, steps, window) as float64 arrays and an odd int, or ValueError."""
  losses = _checks.real_array("val_losses", val_losses, "real numbers")
  losses = losses.astype(np.float64)
  if losses.ndim != 1 or len(losses) < 2:
    raise ValueError(
      f"val_losses must be 1-D with at least 2 values, got shape {losses.shape}."
    )
  if not np.all(np.isfinite(losses)):
    raise ValueError("val_losses must be finite (drop NaN/inf evaluations first).")
  if steps is None:
    t = np.arange(len(losses), dtype=np.float64)
  else:
    t = _checks.real_array("steps", steps, "real numbers").astype(np.float64)
    if t.shape != losses.shape or not np.all(np.isfinite(t)):
      raise ValueError(
        f"steps must be finite and shaped like val_losses {losses.shape},"
        f" got shape {t.shape}."
      )
    if np.any(np.diff(t) <= 0) or t[0] < 0:
      raise ValueError("steps must be >= 0 and strictly increasing.")
  if window is None:  # Odd, about n / 10, at least 3 but never above n.
    n = len(losses)
    window = min(max(3, 2 * round(n / 20) + 1), n if n % 2 else n - 1)
  if (
    isinstance(window, bool)
    or not isinstance(window, int | np.integer)
    or not 1 <= window <= len(losses)
    or window % 2 == 0
  ):
    raise ValueError(
      "window must be a positive odd integer <= len(val_losses) ="
      f" {len(losses)}, or None, got {window!r}."
    )
  return losses, t, int(window)


def estimate_effective_horizon(
  val_losses: Sequence[float] | np.ndarray,
  steps: Sequence[float] | np.ndarray | None = None,
  *,
  fraction: float = 1.0,
  window: int | None = 1,
) -> float:
  r"""The effective learning horizon :math:`T_{ES}` of a validation-loss curve.

  By default [FH26b]'s reading, the first evaluation of the best validation
  loss (the early-stopping point):

  .. math::

    T_{ES} = t_{i^*}, \qquad i^* = \min \operatorname*{arg\,min}_i L_i.

  For noisy or long flat curves, ``window`` smooths :math:`L` by a running
  median first, and ``fraction`` = :math:`q < 1` returns the first step from
  which the smoothed curve stays at or below :math:`L_0 - q\,(L_0 - L^*)` up to
  :math:`t_{i^*}` (see :doc:`choosing_beta`).

  Args:
    val_losses: validation losses in step order, at least 2 finite values.
    steps: the steps (updates) at which they were measured, finite, >= 0 and
      strictly increasing; default ``0, 1, 2, ...`` (then :math:`T_{ES}` is in
      evaluations).
    fraction: :math:`q \in (0, 1]`, the share of the total improvement that
      ends the useful phase (default 1: the best loss itself).
    window: odd number of evaluations in the running median, at most
      ``len(val_losses)``; 1 (default) disables smoothing, None picks
      :math:`2\,\mathrm{round}(n/20) + 1` for :math:`n` losses (at least 3,
      at most :math:`n`).

  Returns:
    :math:`T_{ES}` in the units of ``steps``, a float.

  Raises:
    ValueError: for bad losses, steps, ``fraction`` or ``window``, or a curve
      whose best value is its first.

  Example:
    >>> import balanced_optax as bo
    >>> steps = range(0, 10_001, 1000)  # a 10,000-update run, evaluated every 1000
    >>> val = [4.1, 3.2, 2.9, 2.75, 2.68, 2.65, 2.64, 2.645, 2.65, 2.66, 2.67]
    >>> t_es = bo.estimate_effective_horizon(val, steps)
    >>> print(t_es, round(bo.beta_from_refresh(t_es, grid=bo.BETA_GRID), 3))
    6000.0 0.822

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  losses, t, window = _checked_curve(val_losses, steps, window)
  q = float(_checks.in_interval("fraction", fraction, 0.0, 1.0, low_open=True))
  smooth = _running_median(losses, window // 2) if window > 1 else losses
  best = int(np.argmin(smooth))  # The first evaluation reaching the minimum.
  if best == 0:
    raise ValueError("val_losses never improve on their first value.")
  if q == 1.0:
    return float(t[best])
  # Halved, the differences of finite losses cannot overflow; halving is exact.
  half = smooth / 2.0
  level = max(2.0 * (half[0] - q * (half[0] - half[best])), smooth[best])
  above = np.nonzero(smooth[: best + 1] > level)[0]
  if above.size == 0:  # q so small that the level rounds to L_0.
    return float(t[0])
  j = int(above[-1])  # Last evaluation above the level; j + 1 <= best is below.
  # Linear interpolation of the crossing between evaluations j and j + 1.
  w = (half[j] - level / 2.0) / (half[j] - half[j + 1])
  return float(t[j] + w * (t[j + 1] - t[j]))
