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
* [Z22]'s convergence region :math:`\beta_1 < \sqrt{\beta_2}`.

The scalar rules accept Python floats or NumPy arrays (elementwise) and return
a float for scalar input, an array otherwise. Out-of-range inputs raise a
``ValueError`` that names the argument.
"""

import math
from collections.abc import Sequence

import numpy as np

from balanced_optax import _checks

ArrayLike = float | np.ndarray | Sequence[float]


def _out(x: np.ndarray) -> float | np.ndarray:
  return float(x) if x.ndim == 0 else x


def _beta(name: str, value: ArrayLike) -> np.ndarray:
  return _checks.in_interval(name, value, 0.0, 1.0, high_open=True)


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

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  b = _beta("beta", beta)
  g = _beta("grid", grid)
  if g.ndim != 1 or g.size == 0:
    raise ValueError(f"grid must be a non-empty 1-D sequence, got shape {g.shape}.")
  g = np.sort(g)
  # argmin returns the first minimum, which after sorting is the smaller value.
  nearest = np.argmin(np.abs(b[..., None] - g), axis=-1)
  return _out(g[nearest])


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

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  return _out(1.0 / (1.0 - _beta("beta", beta)))


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

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  b = _beta("beta", beta)
  with np.errstate(divide="ignore"):  # log(0) = -inf gives a half-life of 0.
    return _out(np.log(0.5) / np.log(b))


def beta_from_half_life(steps: ArrayLike) -> float | np.ndarray:
  r"""The EMA memory whose half-life is ``steps``: :math:`\beta = 2^{-1/\text{steps}}`.

  .. math::

    \beta = 2^{-1/h},

  the inverse of :func:`half_life`.

  Args:
    steps: half-life in steps, > 0, a float or an array.

  Returns:
    :math:`\beta \in (0, 1)`, a float or an array.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.beta_from_half_life(13.513), 4))
    0.95

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  s = _checks.in_interval("steps", steps, 0.0, low_open=True)
  return _out(np.exp2(-1.0 / s))


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

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  b = _beta("beta", beta)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
  return _out((1.0 - b) * t)


def beta_from_refresh(t_es: ArrayLike, refresh: ArrayLike = 1000) -> float | np.ndarray:
  r"""[FH26b]'s refresh rule: the beta with :math:`R_\beta` = ``refresh``.

  .. math::

    \beta = 1 - R / T_{ES}.

  [FH26b]: with :math:`R = 1000` this beat the best fixed beta (0.944) on 11
  vision and language runs (worst-case relative validation gap down 33.4%,
  all runs within 1% of their oracle). Since :math:`R_\beta \le T_{ES}` for
  every :math:`\beta \in [0, 1)`, the rule needs :math:`T_{ES} > R`.

  Args:
    t_es: effective learning horizon in steps (see
      :func:`estimate_effective_horizon`).
    refresh: the target refresh count R, > 0 (default 1000 as in [FH26b]).

  Returns:
    :math:`\beta \in (0, 1)`, a float or an array.

  Raises:
    ValueError: if ``t_es <= refresh`` (the run is too short to refresh the
      moments that often) or an argument is out of range.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.beta_from_refresh(t_es=50_000), 6))
    0.98

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  r = _checks.in_interval("refresh", refresh, 0.0, low_open=True)
  t = _checks.in_interval("t_es", t_es, 0.0, low_open=True)
  if np.any(t <= r):
    raise ValueError(
      f"t_es={t_es!r} is too short for refresh={refresh!r}: R = (1 - beta) t_es"
      " <= t_es for every beta in [0, 1), so beta_from_refresh needs"
      " t_es > refresh (t_es == refresh would mean beta = 0, no memory)."
      " Lower `refresh` or measure t_es on a longer run."
    )
  return _out(1.0 - r / t)


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
    kappa: batch-size multiplier, > 0 (below 1 for smaller batches).

  Returns:
    :math:`\beta^\kappa`, a float or an array.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.scale_beta_for_batch(0.99, kappa=4), 6))
    0.960596

  References:
    [B23] Busbridge et al., How to Scale Your EMA, NeurIPS 2023.
  """
  b = _beta("beta", beta)
  k = _checks.in_interval("kappa", kappa, 0.0, low_open=True)
  return _out(b**k)


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
  (:math:`\beta_1 = \beta_2 = \beta < 1`) always meets condition 2
  (:math:`\beta < \sqrt\beta`) but must still clear :math:`\beta_2^*`.

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
  b1 = float(_beta("beta1", beta1))
  b2 = float(_beta("beta2", beta2))
  root = math.sqrt(b2)
  failures, holds = [], []
  if b1 < root:
    holds.append(f"beta1 = {b1:g} < sqrt(beta2) = {root:.6g}")
  else:
    failures.append(f"beta1 = {b1:g} >= sqrt(beta2) = {root:.6g} (lower beta1)")
  if beta2_critical is not None:
    b2c = float(_beta("beta2_critical", beta2_critical))
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
  fraction: float = 0.95,
  window: int | None = None,
) -> float:
  r"""The effective learning horizon :math:`T_{ES}` of a validation-loss curve.

  [FH26b] reads :math:`T_{ES}`, the useful phase of training, off the
  validation trajectory. This function is this project's precise rule for it
  (the paper's own procedure may differ in details):

  1. Smooth: :math:`\tilde L` = centred running median of the losses over
     ``window`` evaluations (isolated spikes vanish). At the start the window
     shrinks symmetrically, so :math:`\tilde L_0 = L_0` and a monotone start
     is kept exactly; at the end it stays full (the last ``window`` values),
     where the curve is flattest and noise would otherwise pick the minimum.
  2. Reference levels: :math:`L_0 = \tilde L_0` (the first evaluation) and
     :math:`L^* = \min_i \tilde L_i`, reached at :math:`t^*` (the
     early-stopping point of the smoothed curve).
  3. :math:`T_{ES}` is the first step from which :math:`\tilde L` stays at or
     below :math:`L_0 - q\,(L_0 - L^*)` all the way to :math:`t^*`, linearly
     interpolated between evaluations, with :math:`q` = ``fraction``. That is:
     from :math:`T_{ES}` on, all further improvement is at most
     :math:`1-q` of the total.

  :math:`q = 1` gives :math:`t^*` itself; :math:`q < 1` makes the rule robust
  to long, nearly flat tails whose minimum noise would otherwise decide
  :math:`t^*`. Requiring the curve to *stay* below the level, rather than to
  touch it once, makes an early noisy dip irrelevant, and an overfitting rise
  after :math:`t^*` is ignored. For :math:`L(t) = a + b e^{-t/\tau}` observed
  on :math:`[0, T]` the rule gives (up to the end window's lag, which is
  :math:`O(e^{-T/\tau})`)

  .. math::

    T_{ES} = -\tau \ln\bigl(1 - q\,(1 - e^{-T/\tau})\bigr)
    \;\approx\; \tau \ln\frac{1}{1-q} \quad (T \gg \tau).

  Steps may be non-uniform (the window counts evaluations, the interpolation
  uses the steps). Noise of standard deviation :math:`\sigma` lowers
  :math:`L^*` by a few :math:`\sigma/\sqrt{\text{window}}` (the minimum of
  the smoothed tail) and delays :math:`T_{ES}` by that shift over the curve's
  slope there, :math:`(1-q)\,b/\tau` for the exponential: noise of 0.3% of
  the improvement moves :math:`T_{ES}` by a few percent, noise of 1% by about
  10%. Average repeated evaluations or lower ``fraction`` for noisier curves.

  Args:
    val_losses: validation losses, at least 5 finite values, in step order.
    steps: the steps at which they were measured, strictly increasing; default
      ``0, 1, 2, ...`` (then :math:`T_{ES}` is in evaluations).
    fraction: :math:`q \in (0, 1]`, the share of the total improvement that
      defines the useful phase (default 0.95).
    window: odd number of evaluations in the running median (1 disables it);
      default the odd number nearest ``len(val_losses) / 10``, at least 3.

  Returns:
    :math:`T_{ES}` in the units of ``steps``, a float.

  Raises:
    ValueError: for fewer than 5 losses, non-finite values, mismatched or
      non-increasing steps, a bad ``fraction`` or ``window``, or a curve that
      never improves on its first value.

  Example:
    >>> import numpy as np
    >>> import balanced_optax as bo
    >>> steps = np.arange(0, 10_001, 50)
    >>> losses = 2.0 + 3.0 * np.exp(-steps / 1000)
    >>> t_es = bo.estimate_effective_horizon(losses, steps)
    >>> print(round(t_es), round(bo.beta_from_refresh(t_es, refresh=100), 4))
    2994 0.9666

  References:
    [FH26b] Fernandez-Hernandez et al., Refresh-Scaling the Memory of Balanced
    Adam, arXiv 2605.10119, 2026.
  """
  losses = np.asarray(val_losses, dtype=np.float64)
  if losses.ndim != 1 or len(losses) < 5:
    raise ValueError(
      f"val_losses must be 1-D with at least 5 values, got shape {losses.shape}."
    )
  if not np.all(np.isfinite(losses)):
    raise ValueError("val_losses must be finite (drop NaN/inf evaluations first).")
  if steps is None:
    t = np.arange(len(losses), dtype=np.float64)
  else:
    t = np.asarray(steps, dtype=np.float64)
    if t.shape != losses.shape or not np.all(np.isfinite(t)):
      raise ValueError(
        f"steps must be finite and shaped like val_losses {losses.shape},"
        f" got shape {t.shape}."
      )
    if np.any(np.diff(t) <= 0):
      raise ValueError("steps must be strictly increasing.")
  q = float(_checks.in_interval("fraction", fraction, 0.0, 1.0, low_open=True))
  if window is None:
    window = max(3, 2 * round(len(losses) / 20) + 1)
  if not isinstance(window, int | np.integer) or window < 1 or window % 2 == 0:
    raise ValueError(f"window must be a positive odd integer, got {window!r}.")

  smooth = _running_median(losses, window // 2)
  best = int(np.argmin(smooth))
  improvement = smooth[0] - smooth[best]
  if improvement <= 0:
    raise ValueError("val_losses never improve on their first value.")
  level = smooth[0] - q * improvement
  above = np.nonzero(smooth[: best + 1] > level)[0]
  j = int(above[-1])  # Last evaluation above the level; j + 1 <= best is below.
  # Linear interpolation of the crossing between evaluations j and j + 1.
  w = (smooth[j] - level) / (smooth[j] - smooth[j + 1])
  return float(t[j] + w * (t[j + 1] - t[j]))
