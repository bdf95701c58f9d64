r"""Choosing beta: memory horizons, refresh counts, batch scaling, convergence.

Balanced Adam has one hyperparameter besides the learning rate, its memory
:math:`\beta`. These rules translate it into quantities with units:

* the memory horizon :math:`H_\beta = 1/(1-\beta)` and the half-life
  :math:`\ln(1/2)/\ln\beta`, both in steps;
* the refresh count :math:`R_\beta = (1-\beta)\,T_{ES}` [FH26b]: how many
  times the moments are renewed during the useful phase of training, whose
  length :math:`T_{ES}` is read off a validation curve by
  :func:`estimate_effective_horizon`;
* the batch-size rule :math:`\beta \to \beta^\kappa` [B23];
* [Z22]'s convergence region :math:`\beta_1 < \sqrt{\beta_2}`;
* [FH26b]'s sweep grid :data:`BETA_GRID`, :math:`1 - \beta = 10^{-k/4}`,
  and :func:`snap_beta`, which rounds any beta to a grid.

The scalar rules accept Python floats or NumPy arrays (elementwise) and return
a float for scalar input, an array otherwise. Out-of-range inputs (NaN, inf,
strings and bools included) raise a ``ValueError`` that names the argument;
no rule returns :math:`\beta = 1`: where float64 would round the result to 1
(a horizon beyond :math:`2^{53}` steps) it raises a ``ValueError`` instead.

Example:
  >>> import numpy as np
  >>> import balanced_optax as bo
  >>> print(len(bo.BETA_GRID), np.round(bo.BETA_GRID, 5))
  13 [0.      0.43766 0.68377 0.82217 0.9     0.94377 0.96838 0.98222 0.99
   0.99438 0.99684 0.99822 0.999  ]
  >>> print(round(bo.memory_horizon(bo.BETA_GRID[5]), 3))
  17.783

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


BETA_GRID: tuple[float, ...] = tuple(1.0 - 10.0 ** (-k / 4) for k in range(13))
r"""[FH26b]'s sweep grid of 13 memories, :math:`1 - \beta = 10^{-k/4}`, k = 0..12.

Stored exactly as :math:`1 - 10^{-k/4}` (in float64): 0, 0.437659, 0.683772,
0.822172, 0.9, 0.943766, 0.968377, 0.982217, 0.99, 0.994377, 0.996838,
0.998222, 0.999. [FH26b] publishes these rounded to 5 decimals (0.43766,
0.68377, ...); every exact value rounds to its published one, and snapping to
either gives the same grid point for all of [FH26b]'s selections: rounding
moves a midpoint between neighbours by at most 5e-6, and the closest of their
rule's betas, 0.975 (T_ES = 40000), lies 3e-4 below the midpoint 0.97530 of
0.96838 and 0.98222. The exact values keep
:math:`-\log_{10}(1-\beta)` on the quarter-decade lattice, and a range written
with the rounded values, e.g. ``beta >= 0.68377``, still contains its end point.
"""


def snap_beta(
  beta: ArrayLike, grid: Sequence[float] | np.ndarray = BETA_GRID
) -> float | np.ndarray:
  r"""The grid value nearest to ``beta`` in beta distance, ties to the smaller.

  .. math::

    \operatorname{snap}(\beta) = \min \operatorname*{arg\,min}_{g \in G}
    |\beta - g|.

  Distances are measured in :math:`\beta` itself, not in
  :math:`\log(1-\beta)`, as in [FH26b] and [FH26c]; an exact tie (in float64)
  goes to the smaller grid value, the shorter memory.

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
  """
  b = _checks.unit_interval("beta", beta)
  return _checks.float_or_array(_nearest(b, _checks.beta_grid("grid", grid)))


def _nearest(beta: np.ndarray, sorted_grid: np.ndarray) -> np.ndarray:
  # argmin returns the first minimum, which in a sorted grid is the smaller value.
  nearest = np.argmin(np.abs(beta[..., None] - sorted_grid), axis=-1)
  return sorted_grid[nearest]


def memory_horizon(beta: ArrayLike) -> float | np.ndarray:
  r"""The memory horizon :math:`H_\beta = 1/(1-\beta)` of an EMA, in steps.

  .. math::

    H_\beta = \frac{1}{1-\beta} = 1 + \sum_{j \ge 0} (1-\beta)\beta^j\, j.

  It is the sum of the EMA's weights :math:`(1-\beta)\beta^j` times their age
  plus one, i.e. the mean age of the information in the moments (plus one).

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
  r"""Steps after which an EMA weight has halved: :math:`\ln(1/2) / \ln\beta`.

  .. math::

    \beta^{h} = \tfrac{1}{2} \iff h = \frac{\ln(1/2)}{\ln\beta}
    \approx 0.693\, H_\beta \quad (\beta \to 1).

  ``beta = 0`` (no memory) gives 0.

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
  r"""The EMA memory whose half-life is ``steps``: :math:`\beta = 2^{-1/\text{steps}}`.

  .. math::

    \beta = 2^{-1/h},

  the inverse of :func:`half_life`.

  Args:
    steps: half-life in steps, in (0, inf), a float or an array.

  Returns:
    :math:`\beta \in [0, 1)`, a float or an array (0.0 for a half-life below
    about 1/1074 steps, where :math:`2^{-1/h}` underflows float64).

  Raises:
    ValueError: if ``steps`` is out of range (an infinite half-life is: it
      would mean :math:`\beta = 1`), or so long (above about
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
  r"""[FH26b]'s refresh count :math:`R_\beta = (1-\beta)\,T_{ES}`.

  .. math::

    R_\beta = (1-\beta)\, T_{ES} = T_{ES} / H_\beta.

  How many memory horizons fit into the useful phase of training, i.e. how many
  times Adam renews its moment estimates before the validation loss stops
  improving. [FH26b] finds :math:`R_\beta \approx 1000` a robust target.

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
  """
  b = _checks.unit_interval("beta", beta)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
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

  [FH26b]: with :math:`R = 1000` and the result rounded to their sweep grid
  (``grid=BETA_GRID``), this beat the best fixed beta (0.944) on 11 vision and
  language runs (worst-case relative validation gap down 33.4%, all runs
  within 1% of their oracle); with ``grid=BETA_GRID`` this function returns
  their published selections, e.g. T_ES = 6000 -> 0.822, 20000 -> 0.944,
  40000 -> 0.968. ``grid=None`` gives the continuous beta.

  Short runs. Since :math:`R_\beta = (1-\beta) T_{ES} \le T_{ES}`, a run with
  :math:`T_{ES} \le R` cannot refresh its moments R times; the rule's limit
  there is :math:`\beta = 0`: no memory, i.e. balanced Adam becomes sign
  descent, :math:`u = g / (|g| + \varepsilon)`. That is what it returns, but
  [FH26b] never tested it: their runs have :math:`T_{ES} \ge 6000`
  (:math:`\beta \ge 0.82`). This package recommends measuring beta instead
  (``select_beta``, a 200-update pilot [FH26c]) or, for a prior, flooring the
  rule at the lower end of [FH26c]'s selection range,
  ``beta_range=(0.68377, 0.999)`` (T_ES below about 3162 then gets 0.68377).

  Args:
    t_es: effective learning horizon in steps, in (0, inf) (see
      :func:`estimate_effective_horizon`); a float or an array.
    refresh: the target refresh count R, in (0, inf) (default 1000 as in
      [FH26b]).
    grid: memories to round the result to, nearest in beta distance with ties
      to the smaller (see :func:`snap_beta`); ``BETA_GRID`` for [FH26b]'s
      selections; default None (no rounding).
    beta_range: optional ``(low, high)`` with ``0 <= low <= high < 1``: the
      continuous beta is clipped to it, and with a ``grid`` only the grid
      values within 1e-5 of it are candidates (as in
      :func:`beta_from_noise_and_lag`: a range written with rounded grid
      values keeps them).

  Returns:
    :math:`\beta \in [0, 1)`, a float or an array (broadcast over the inputs).

  Raises:
    ValueError: if an argument is out of range (an infinite ``t_es`` is one),
      if ``t_es / refresh`` is so large (above :math:`2^{53}`) that the
      continuous beta rounds to 1.0 in float64 (pass ``grid`` or
      ``beta_range``), or if no grid value lies in ``beta_range``.

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
  """
  r = _checks.in_interval("refresh", refresh, 0.0, low_open=True)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
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


def scale_beta_for_batch(beta: ArrayLike, kappa: ArrayLike) -> float | np.ndarray:
  r"""[B23]'s EMA scaling rule :math:`\beta \to \beta^\kappa`.

  .. math::

    \beta_{\kappa B} = \beta_B^{\,\kappa}.

  When the batch grows by a factor :math:`\kappa` (so the run takes
  :math:`\kappa` times fewer steps for the same data), :math:`\beta^\kappa`
  keeps the EMA's memory the same *in samples*: one new step weighs what
  :math:`\kappa` old steps did. To first order in :math:`1-\beta` the horizon
  in steps shrinks by :math:`\kappa`.

  Args:
    beta: EMA memory in [0, 1).
    kappa: batch-size multiplier, in (0, inf) (below 1 for smaller batches).

  Returns:
    :math:`\beta^\kappa \in [0, 1)`, a float or an array.

  Raises:
    ValueError: if an argument is out of range, or if :math:`\kappa` is so
      small that :math:`\beta^\kappa` rounds to 1.0 in float64 (e.g.
      ``scale_beta_for_batch(0.5, 1e-30)``: a horizon of :math:`10^{30}`
      steps, which no float64 beta below 1 can represent).

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.scale_beta_for_batch(0.99, kappa=4), 6))
    0.960596
  """
  b = _checks.unit_interval("beta", beta)
  k = _checks.in_interval("kappa", kappa, 0.0, low_open=True)
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

  [Z22] proves that Adam, unmodified, converges when

  .. math::

    \beta_2 \ge \beta_2^* \quad\text{and}\quad \beta_1 < \sqrt{\beta_2},

  that is:

  1. :math:`\beta_2 \ge \beta_2^*`, a problem-dependent threshold that rises
     as the batch gets smaller (0.999-0.9995 reported for small batches);
     below it there is a region where Adam can diverge, and
  2. :math:`\beta_1 < \sqrt{\beta_2}`.

  Condition 2 is checked here. Condition 1 is checked only when
  ``beta2_critical`` is given; otherwise the reason says that it is unknown,
  and the bool reflects condition 2 alone. Balanced Adam
  (:math:`\beta_1 = \beta_2 = \beta`, :math:`0 < \beta < 1`) always meets
  condition 2 (:math:`\beta < \sqrt\beta`) but must still clear
  :math:`\beta_2^*`; :math:`\beta = 0` does not (:math:`0 \not< 0`). When
  condition 2 fails the advice is to lower :math:`\beta_1` below
  :math:`\sqrt{\beta_2}` or raise :math:`\beta_2` above :math:`\beta_1^2`
  (only the latter when :math:`\beta_1 = 0`).

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


def estimate_effective_horizon(
  val_losses: Sequence[float] | np.ndarray,
  steps: Sequence[float] | np.ndarray | None = None,
  *,
  fraction: float = 1.0,
  window: int | None = 1,
) -> float:
  r"""The effective learning horizon :math:`T_{ES}` of a validation-loss curve.

  By default this is [FH26b]'s reading: :math:`T_{ES}` is the update count at
  which the run's best validation loss was recorded,

  .. math::

    T_{ES} = t_{i^*}, \qquad i^* = \min \operatorname*{arg\,min}_i L_i,

  the early-stopping point (the first evaluation reaching the minimum). Their
  tables read this way: a 10,000-update WikiText run whose best validation
  loss came at update 6000 has :math:`T_{ES} = 6000`, and vision runs still
  improving at the end have :math:`T_{ES}` about their total updates. The
  result is one of ``steps``, so its resolution is the evaluation interval
  (their round T_ES values are round evaluation steps).

  Two optional refinements, for noisy or long flat curves (defaults off):

  1. ``window`` > 1 smooths first: :math:`\tilde L` = centred running median
     over ``window`` evaluations (isolated spikes vanish). At the start the
     window shrinks symmetrically, so :math:`\tilde L_0 = L_0`; at the end it
     stays full (the last ``window`` values), where noise would otherwise pick
     the minimum.
  2. ``fraction`` = :math:`q < 1` stops earlier: with :math:`L_0 = \tilde L_0`
     and :math:`L^* = \tilde L_{i^*}`, :math:`T_{ES}` is the first step from
     which :math:`\tilde L` stays at or below :math:`L_0 - q\,(L_0 - L^*)`
     all the way to :math:`t_{i^*}`, linearly interpolated between
     evaluations: from there on, all further improvement is at most
     :math:`1-q` of the total. For :math:`L(t) = a + b e^{-t/\tau}` on
     :math:`[0, T]`,

     .. math::

       T_{ES} = -\tau \ln\bigl(1 - q\,(1 - e^{-T/\tau})\bigr)
       \;\approx\; \tau \ln\frac{1}{1-q} \quad (T \gg \tau),

     while :math:`q = 1` gives :math:`T` (the curve is still improving).

  Noise of standard deviation :math:`\sigma` on a flat tail moves the raw
  argmin anywhere along the tail; ``window`` = about ``len(val_losses) / 10``
  and ``fraction=0.95`` pin :math:`T_{ES}` to a few percent at noise of 0.3%
  of the improvement. Those settings give shorter :math:`T_{ES}` (hence
  smaller beta from :func:`beta_from_refresh`) than [FH26b]'s reading, which
  its published selections were made with.

  Args:
    val_losses: validation losses in step order, at least 2 finite values.
    steps: the steps (updates) at which they were measured, finite, >= 0 and
      strictly increasing; default ``0, 1, 2, ...`` (then :math:`T_{ES}` is in
      evaluations).
    fraction: :math:`q \in (0, 1]`, the share of the total improvement that
      ends the useful phase (default 1: the best loss itself).
    window: odd number of evaluations in the running median, at most
      ``len(val_losses)``; 1 (default) disables smoothing, None picks
      :math:`2\,\mathrm{round}(n/20) + 1` for :math:`n` losses, an odd number
      about :math:`n/10` (at least 3, at most :math:`n`).

  Returns:
    :math:`T_{ES}` in the units of ``steps``, a float.

  Raises:
    ValueError: for fewer than 2 losses, non-real or non-finite values,
      mismatched, negative or non-increasing steps, a bad ``fraction`` or
      ``window`` (bools are not integers), or a curve whose best value is its
      first.

  Example:
    >>> import balanced_optax as bo
    >>> steps = range(0, 10_001, 1000)  # a 10,000-update run, evaluated every 1000
    >>> val = [4.1, 3.2, 2.9, 2.75, 2.68, 2.65, 2.64, 2.645, 2.65, 2.66, 2.67]
    >>> t_es = bo.estimate_effective_horizon(val, steps)
    >>> print(t_es, round(bo.beta_from_refresh(t_es, grid=bo.BETA_GRID), 3))
    6000.0 0.822
  """
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
  q = float(_checks.in_interval("fraction", fraction, 0.0, 1.0, low_open=True))
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

  smooth = _running_median(losses, window // 2) if window > 1 else losses
  best = int(np.argmin(smooth))  # The first evaluation reaching the minimum.
  if best == 0:
    raise ValueError("val_losses never improve on their first value.")
  if q == 1.0:
    return float(t[best])
  level = smooth[0] - q * (smooth[0] - smooth[best])
  above = np.nonzero(smooth[: best + 1] > level)[0]
  j = int(above[-1])  # Last evaluation above the level; j + 1 <= best is below.
  # Linear interpolation of the crossing between evaluations j and j + 1.
  w = (smooth[j] - level) / (smooth[j] - smooth[j + 1])
  return float(t[j] + w * (t[j + 1] - t[j]))
