r"""Early memory selection [FH26c]: choose beta from a short pilot run.

:func:`select_beta` trains a short pilot with the run's own recipe, measures
the noise :math:`V` and the drift :math:`D` of balanced Adam's direction
:math:`r = \mu / (\sqrt{q} + \varepsilon)` with probe gradients at a few
checkpoints, and returns the memory that balances them
(:func:`~balanced_optax.beta_from_noise_and_lag`). The method, its estimators
and what they target are in :doc:`choosing_beta`.
"""

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from balanced_optax import _checks, _probes
from balanced_optax.beta_rules import BETA_GRID, beta_from_noise_and_lag


class BetaSelection(NamedTuple):
  r"""What :func:`select_beta` measured and chose.

  Attributes:
    beta: the chosen memory, snapped to the grid (the continuous one if
      ``grid=None``).
    beta_continuous: :math:`1 - 1/H` before snapping.
    noise: :math:`\hat V`, the sketched direction's noise per gradient.
    change: the change per update the rule used: :math:`\hat D = I + C/L^2`
      (``change_estimate="published"``), :math:`\max(\tilde D, 2\sigma)`
      (``"noise_corrected"``), 0 when nothing changed (see ``pilot_moved``).
    lag_intercept: :math:`I` of the fit :math:`y_n \approx I + C/n^2`.
    lag_slope: :math:`C` of that fit.
    lags: the lags :math:`n`, in updates.
    lag_changes: :math:`y_n = |z_{T_p} - z_{T_p-n}|^2 / n^2`, one per lag.
    horizon: :math:`H` after clipping, in updates.
    pilot_steps: :math:`T_p`, the pilot's optimizer updates.
    pilot_beta: the memory the pilot trained with.
    num_probes: probe gradients per checkpoint.
    gradient_evaluations: gradients computed, the pilot's and the probes'
      (micro-batches under gradient accumulation).
    seconds: wall time of the whole selection (pilot, probes, compilation).
    skipped_probes: the probes left out for a non-finite gradient.
    change_estimate: ``"published"`` or ``"noise_corrected"``.
    corrected_change: :math:`\tilde D`, the change without the probe noise
      (may be negative; computed whatever ``change_estimate``).
    corrected_change_stderr: :math:`\sigma`, its standard error at zero
      drift.
    corrected_lag_changes: :math:`\tilde D` of each lag alone.
    noise_share: the share of :math:`\hat D` that the probe-noise term
      :math:`2\hat V/(mL^2)` explains, in [0, 1].
    intercept_clipped: whether the fit's :math:`I` was negative (set to 0).
    horizon_ceiling: :math:`(mL^2/8)^{1/3}`, the :math:`H` of
      :math:`\hat D` when it is all probe noise: the published estimator's
      ceiling.
    beta_ceiling: the beta chosen at that ceiling (clipped and snapped as
      ``beta``).
    pilot_moved: whether the parameters moved over the lags.
    design_limited: whether ``beta`` is set by the probe design (or by a
      model that did not move) rather than measured from the workload.
    design_reason: why, or ``""``.
    pilot_params: parameters after the pilot's updates
      (``sel._replace(pilot_params=None)`` frees them).

  Records saved before a field existed load with its default (None for a
  number: not measured).
  """

  beta: float
  beta_continuous: float
  noise: float
  change: float
  lag_intercept: float
  lag_slope: float
  lags: tuple[int, ...]
  lag_changes: tuple[float, ...]
  horizon: float
  pilot_steps: int
  pilot_beta: float
  num_probes: int
  gradient_evaluations: int
  seconds: float
  skipped_probes: tuple[int, ...] = ()
  change_estimate: str = "published"
  corrected_change: float | None = None
  corrected_change_stderr: float | None = None
  corrected_lag_changes: tuple[float, ...] = ()
  noise_share: float | None = None
  intercept_clipped: bool = False
  horizon_ceiling: float | None = None
  beta_ceiling: float | None = None
  pilot_moved: bool = True
  design_limited: bool = False
  design_reason: str = ""
  pilot_params: Any = None

  def as_dict(self) -> dict[str, Any]:
    """The scalar fields as plain Python values (JSON-ready; no params)."""
    d = self._asdict()
    d.pop("pilot_params")
    for name in ("lags", "lag_changes", "skipped_probes", "corrected_lag_changes"):
      d[name] = list(d[name])
    return d

  def report(self) -> str:
    """One line for a training log."""
    skipped = len(self.skipped_probes)
    corrected = self.change_estimate == "noise_corrected"
    share = self.noise_share
    return (
      f"beta={self.beta:.5f} (continuous {self.beta_continuous:.5f},"
      f" H={self.horizon:.1f}) from noise V={self.noise:.4g},"
      f" {'noise-corrected ' if corrected else ''}change D={self.change:.4g}"
      f" (I={self.lag_intercept:.4g}, C={self.lag_slope:.4g}, lags {list(self.lags)}"
      + (f"; {share:.0%} of I + C/L^2 is probe noise" if share is not None else "")
      + f"); pilot {self.pilot_steps} updates at beta={self.pilot_beta:g},"
      f" {self.gradient_evaluations} gradients"
      + (f" ({skipped} non-finite probes skipped)" if skipped else "")
      + f", {self.seconds:.1f} s"
      + (f"; DESIGN-LIMITED: {self.design_reason}" if self.design_limited else "")
    )


# --- The estimators ------------------------------------------------------------


def _squared_norm(x: np.ndarray, axis: int | None = None) -> np.ndarray:
  return np.sum(np.real(x * np.conj(x)), axis=axis)


def _noise_estimate(z: np.ndarray, z_groups: np.ndarray, sizes: np.ndarray) -> float:
  r"""V^ = N / (mean_j(N / n_j) - 1) * mean_j |z_j - z|^2, for groups of n_j
  probes and N = sum_j n_j: unbiased to first order (m/(G-1) * mean for equal
  groups)."""
  n = np.asarray(sizes, np.float64)
  total = n.sum()
  spread = np.mean(_squared_norm(z_groups - z, axis=-1))
  return float(total / (np.mean(total / n) - 1.0) * spread)


def _lag_fit(lags: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Unconstrained least squares y ~ I + C / n^2 (at least two distinct lags)."""
  x = 1.0 / lags.astype(np.float64) ** 2
  design = np.stack([np.ones_like(x), x], axis=1)
  (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
  return float(intercept), float(slope)


def _real(x: np.ndarray) -> np.ndarray:
  """A complex sketch as a real one of twice the length: Re<u, v> = u . v."""
  return np.concatenate([x.real, x.imag], axis=-1) if np.iscomplexobj(x) else x


class _CorrectedChange(NamedTuple):
  change: float  # D~ = sum_n n^2 U_n / sum_n n^4
  stderr: float  # its standard error at zero drift
  lag_changes: tuple[float, ...]  # U_n / n^2


def _corrected_change(
  sketches: dict[int, _probes.Sketches], pilot_steps: int, lags: tuple[int, ...]
) -> _CorrectedChange:
  """The change without probe noise, from the groups' sketches.

  U_n = mean over groups j != k of d_j . d_k, d_j = z^(j)_T - z^(j)_{T-n}:
  distinct groups hold independent probes, so E U_n = |E z_T - E z_{T-n}|^2
  with no noise term, whatever V and the group sizes. D~ is the least-squares
  fit U_n ~ D n^2. Its variance at zero drift is tr(Sigma_1^2) (Sigma_1: the
  noise covariance of one gradient's sketch) times the groups' weights;
  tr(Sigma_1^2) = E (e . e')^2 for independent deviations e = z^(j) - z of
  covariance Sigma_1 (1/n_j - 1/N), found at distinct checkpoints.
  """
  end = sketches[pilot_steps]
  num_groups = len(end.sizes)
  n = np.asarray(lags, np.float64)
  u = np.empty(len(lags))
  for i, lag in enumerate(lags):
    d = _real(end.groups - sketches[pilot_steps - lag].groups)
    total = d.sum(axis=0)
    u[i] = (total @ total - np.sum(d * d)) / (num_groups * (num_groups - 1))
  w = n**2 / np.sum(n**4)
  unit = [
    _real(s.groups - s.z) / np.sqrt(1 / s.sizes - 1 / s.sizes.sum())[:, None]
    for _, s in sorted(sketches.items())
  ]
  trace = np.mean([(a @ b.T) ** 2 for i, a in enumerate(unit) for b in unit[i + 1 :]])
  # Pair (j, k) at lag n: noise (a_j + b_nj)(a_k + b_nk); two lags share a_j a_k.
  a = 1 / end.sizes
  b = np.stack([1 / sketches[pilot_steps - lag].sizes for lag in lags])
  j, k = np.triu_indices(num_groups, 1)
  same = np.sum((a[j] + b[:, j]) * (a[k] + b[:, k]), axis=1)
  shared = np.sum(a[j] * a[k])
  weights = w**2 @ same + (np.sum(w) ** 2 - np.sum(w**2)) * shared
  variance = (2 / (num_groups * (num_groups - 1))) ** 2 * trace * weights
  return _CorrectedChange(
    change=float(w @ u),
    stderr=float(np.sqrt(variance)),
    lag_changes=tuple(float(x) for x in u / n**2),
  )


# --- select_beta: checks, the pilot, the estimate, the selection --------------

_CHANGE_ESTIMATES = ("published", "noise_corrected")
# The change counts as resolved above this many standard errors of D~.
_RESOLVED = 2.0
# Above this share of probe noise in D^, H is the design's, not the workload's.
_NOISE_SHARE_LIMIT = 0.5


class _Settings(NamedTuple):
  """select_beta's checked arguments."""

  pilot_steps: int
  lags: tuple[int, ...]  # distinct, ascending
  num_probes: int
  num_groups: int
  sketch_dim: int
  beta_range: tuple[float, float]
  seed: int
  change_estimate: str


class _Pilot(NamedTuple):
  """What the pilot ran and measured."""

  sketches: dict[int, _probes.Sketches]  # by pilot update
  params: Any
  gradient_evaluations: int
  skipped_probes: tuple[int, ...]
  seconds: float
  moved: bool  # the parameters changed over the lags


class _Measurement(NamedTuple):
  """V and D as estimated from the sketches."""

  noise: float
  change: float
  lag_intercept: float
  lag_slope: float
  lag_changes: tuple[float, ...]
  intercept_clipped: bool
  probe_noise: float  # the endpoint-noise term of D^, V (1/N_T + 1/N_{T-L}) / L^2
  ceiling: float  # the H of D^ = probe_noise, (L^2 / (4 (1/N_T + 1/N_{T-L})))^(1/3)
  corrected: _CorrectedChange


def _check_arguments(
  make_optimizer: Any,
  grad_fn: Any,
  train_batch: Any,
  probe_batch: Any,
  params: Any,
  *,
  pilot_steps: Any,
  pilot_beta: Any,
  lags: Any,
  num_probes: Any,
  num_groups: Any,
  sketch_dim: Any,
  eps: Any,
  beta_range: Any,
  grid: Any,
  seed: Any,
  change_estimate: Any,
) -> _Settings:
  """select_beta's arguments, checked before anything runs."""
  if isinstance(make_optimizer, optax.GradientTransformation) or not callable(
    make_optimizer
  ):
    raise ValueError(
      "make_optimizer must be a function beta -> optax.GradientTransformation,"
      " the run's recipe with beta left open (e.g. lambda beta:"
      f" bo.balanced_adam(1e-3, beta)), got a {type(make_optimizer).__name__}."
    )
  for name, fn in (("grad_fn", grad_fn), ("train_batch", train_batch)):
    if not callable(fn):
      raise ValueError(f"{name} must be a function, got a {type(fn).__name__}.")
  if probe_batch is not None and not callable(probe_batch):
    raise ValueError(
      f"probe_batch must be a function or None, got a {type(probe_batch).__name__}."
    )
  pilot_steps = _checks.integer("pilot_steps", pilot_steps, 1)
  if not isinstance(lags, Iterable) or isinstance(lags, str):
    raise ValueError(f"lags must be a sequence of integers >= 1, got {lags!r}.")
  lag_list = [_checks.integer("lags", n, 1) for n in lags]
  if len(set(lag_list)) < 2:
    raise ValueError(f"lags must hold at least two distinct integers, got {lags!r}.")
  if max(lag_list) >= pilot_steps:
    raise ValueError(
      f"lags must lie in [1, pilot_steps - 1] = [1, {pilot_steps - 1}], got {lags!r}."
    )
  num_groups = _checks.integer("num_groups", num_groups, 2)
  num_probes = _checks.integer("num_probes", num_probes, num_groups)
  if num_probes % num_groups:
    raise ValueError(
      f"num_probes must be a multiple of num_groups={num_groups}, got {num_probes}."
    )
  sketch_dim = _checks.integer("sketch_dim", sketch_dim, 1)
  _checks.check_beta("pilot_beta", pilot_beta)
  _checks.check_interval("eps", eps, 0.0)
  low, high = _checks.beta_range("beta_range", beta_range)
  if grid is not None:
    _checks.grid_in_range("grid", grid, low, high)
  seed = _checks.integer("seed", seed, 0)
  if not isinstance(change_estimate, str) or change_estimate not in _CHANGE_ESTIMATES:
    raise ValueError(
      f"change_estimate must be one of {_CHANGE_ESTIMATES}, got {change_estimate!r}."
    )
  if not sum(jnp.size(x) for x in jax.tree.leaves(params)):
    raise ValueError(
      "params hold no coordinates: there is no direction whose noise and"
      " change the pilot could measure."
    )
  return _Settings(
    pilot_steps=pilot_steps,
    lags=tuple(sorted(set(lag_list))),
    num_probes=num_probes,
    num_groups=num_groups,
    sketch_dim=sketch_dim,
    beta_range=(low, high),
    seed=seed,
    change_estimate=change_estimate,
  )


# An optax.MultiSteps that makes no update in this many micro-batches is stuck.
_MAX_MICRO_BATCHES = 10_000


def _accumulation(opt_state: Any) -> optax.MultiStepsState | None:
  """The state of the recipe's optax.MultiSteps, None if it has none."""
  is_multi = lambda x: isinstance(x, optax.MultiStepsState)
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_multi) if is_multi(s)]
  if len(found) > 1:
    raise ValueError(
      "make_optimizer's recipe nests several optax.MultiSteps; select_beta"
      " counts the updates of one."
    )
  return found[0] if found else None


def _counts(opt_state: Any) -> tuple[int, int]:
  """optax.MultiSteps' (mini_step, gradient_step), on the host."""
  state = _accumulation(opt_state)
  assert state is not None
  mini, updates = jax.device_get((state.mini_step, state.gradient_step))
  return int(mini), int(updates)


def _one_update(train_step, params, opt_state, train_batch, used: int):
  """One optimizer update: one batch, or as many as optax.MultiSteps takes.

  Returns the new params and state, the batches used so far, the
  micro-batches the update averaged and whether the params moved (on device).
  """
  if _accumulation(opt_state) is None:
    params, opt_state, moved = train_step(params, opt_state, train_batch(used))
    return params, opt_state, used + 1, 1, moved
  mini, updates = _counts(opt_state)
  moved = jnp.array(False)
  for _ in range(_MAX_MICRO_BATCHES):
    params, opt_state, step_moved = train_step(params, opt_state, train_batch(used))
    moved = moved | step_moved
    used += 1
    new_mini, new_updates = _counts(opt_state)
    if new_updates > updates:
      return params, opt_state, used, mini + 1, moved
    mini = new_mini
  raise ValueError(
    f"optax.MultiSteps made no update in {_MAX_MICRO_BATCHES} micro-batches"
    f" (up to train_batch({used - 1})): it skips them all."
  )


def _batches_after(train_batch: Callable[[int], Any], offset: int):
  """The default probe batches: those after the pilot's ``offset`` batches."""
  return lambda i: train_batch(offset + i)


def _no_finite_probe(update: int, probes: range, finite: np.ndarray, params) -> str:
  bad = [i for i, ok in zip(probes, finite, strict=True) if not ok]
  diverged = not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
  return (
    f"select_beta: at pilot update {update}, probe gradients {bad} are not"
    " finite and leave a group of probes with none, whose direction, and so"
    " the noise, cannot be measured."
    + (
      " The pilot's parameters are themselves not finite there: the pilot diverged."
      if diverged
      else " Check grad_fn and probe_batch for these probes."
    )
  )


def _warn_skipped(skipped: list[tuple[int, int]]) -> None:
  """A warning naming the (pilot update, probe) pairs left out."""
  where = {u: [i for v, i in skipped if v == u] for u, _ in skipped}
  warnings.warn(
    f"select_beta skipped {len(skipped)} non-finite probe gradient(s): "
    + "; ".join(f"probes {ids} at pilot update {u}" for u, ids in where.items()),
    RuntimeWarning,
    stacklevel=4,  # select_beta's caller
  )


def _run_pilot(
  make_optimizer: Callable[[float], Any],
  grad_fn: Callable[[Any, Any], Any],
  train_batch: Callable[[int], Any],
  probe_batch: Callable[[int], Any] | None,
  params: Any,
  settings: _Settings,
  *,
  pilot_beta: float,
  eps: float,
) -> _Pilot:
  """The pilot's updates, and the probes' sketches at its checkpoints."""
  start = time.perf_counter()
  tx = make_optimizer(pilot_beta)
  if not (
    callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))
  ):
    raise ValueError(
      f"make_optimizer({pilot_beta}) must return an optax.GradientTransformation,"
      f" got a {type(tx).__name__}."
    )

  def step(params, opt_state, batch):
    grads = grad_fn(params, batch)
    _probes.check_gradients(grads, params)  # Traced: before the first update.
    updates, opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    moved = jax.tree.map(lambda x, y: jnp.any(x != y), new_params, params)
    return new_params, opt_state, jnp.any(jnp.stack(jax.tree.leaves(moved)))

  train_step = jax.jit(step, donate_argnums=(0, 1))
  probe = _probes.Probe(
    grad_fn,
    settings.num_probes,
    settings.num_groups,
    settings.sketch_dim,
    eps,
    settings.seed,
  )
  checkpoints = {settings.pilot_steps - n for n in settings.lags}
  checkpoints.add(settings.pilot_steps)

  # The caller keeps params: the pilot donates its own copy.
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  opt_state = tx.init(params)
  sketches, skipped, moved = {}, [], []
  used = drawn = probes = 0  # training batches, probe batches, probes
  micro = 1  # micro-batches per update (optax.MultiSteps)
  first_checkpoint = min(checkpoints)
  for update in range(settings.pilot_steps + 1):
    if update in checkpoints:
      if probe_batch is None:
        probe_batch = _batches_after(train_batch, settings.pilot_steps * micro)
      ids = range(drawn, drawn + settings.num_probes * micro)
      sketch = probe(params, (probe_batch(i) for i in ids), micro)
      here = range(probes, probes + settings.num_probes)
      if not np.all(sketch.sizes > 0):
        raise ValueError(_no_finite_probe(update, here, sketch.finite, params))
      skipped += [
        (update, i) for i, ok in zip(here, sketch.finite, strict=True) if not ok
      ]
      sketches[update] = sketch
      drawn, probes = drawn + len(ids), probes + settings.num_probes
    if update < settings.pilot_steps:
      params, opt_state, used, micro, update_moved = _one_update(
        train_step, params, opt_state, train_batch, used
      )
      if update >= first_checkpoint:
        moved.append(update_moved)
  params = jax.block_until_ready(params)
  if skipped:
    _warn_skipped(skipped)
  return _Pilot(
    sketches=sketches,
    params=params,
    gradient_evaluations=used + drawn,
    skipped_probes=tuple(i for _, i in skipped),
    seconds=time.perf_counter() - start,
    moved=bool(np.any(jax.device_get(moved))),
  )


def _estimate(
  sketches: dict[int, _probes.Sketches], pilot_steps: int, lags: tuple[int, ...]
) -> _Measurement:
  """V from the groups at the last checkpoint, D from the pooled sketches' lags."""
  end, start = sketches[pilot_steps], sketches[pilot_steps - lags[-1]]
  noise = _noise_estimate(end.z, end.groups, end.sizes)
  y = np.array(
    [_squared_norm(end.z - sketches[pilot_steps - n].z) / n**2 for n in lags]
  )
  raw_intercept, raw_slope = _lag_fit(np.asarray(lags), y)
  intercept, slope = max(raw_intercept, 0.0), max(raw_slope, 0.0)
  # Each pooled z carries noise V / N of its N probes: y_L carries it twice.
  inverse_probes = 1 / end.sizes.sum() + 1 / start.sizes.sum()
  return _Measurement(
    noise=noise,
    change=float(intercept + slope / lags[-1] ** 2),
    lag_intercept=intercept,
    lag_slope=slope,
    lag_changes=tuple(float(v) for v in y),
    intercept_clipped=bool(raw_intercept < 0),
    probe_noise=float(noise * inverse_probes / lags[-1] ** 2),
    ceiling=float(np.cbrt(lags[-1] ** 2 / (4 * inverse_probes))),
    corrected=_corrected_change(sketches, pilot_steps, lags),
  )


def _limits(
  measured: _Measurement, moved: bool, change_estimate: str
) -> tuple[float, list[str]]:
  """The change the rule uses, and why the design rather than the workload
  sets it (no reason: measured)."""
  corrected = measured.corrected
  resolution = _RESOLVED * corrected.stderr
  resolved = corrected.change > resolution
  share = _noise_share(measured)
  reasons = []
  if not moved:
    reasons.append(
      "the pilot's parameters did not move over the lags (a learning rate of 0?)"
    )
  if not resolved:
    reasons.append(
      f"the change is not resolved above the probe noise (noise-corrected"
      f" D = {corrected.change:.3g} <= {_RESOLVED:g} standard errors ="
      f" {resolution:.3g})"
    )
  if change_estimate == "published" and share >= _NOISE_SHARE_LIMIT:
    reasons.append(
      f"{share:.0%} of D = I + C/L^2 is the probe-noise term 2V/(m L^2), which"
      f" caps H at (m L^2 / 8)^(1/3) = {measured.ceiling:.1f}"
    )
  if not (moved or resolved):
    return 0.0, reasons  # Nothing changes: D = 0.
  if change_estimate == "published":
    return measured.change, reasons
  return max(corrected.change, resolution), reasons


def _noise_share(measured: _Measurement) -> float:
  if measured.change <= 0:
    return 1.0
  return min(1.0, measured.probe_noise / measured.change)


def _selection(
  measured: _Measurement,
  pilot: _Pilot,
  settings: _Settings,
  *,
  pilot_beta: float,
  grid: Sequence[float] | np.ndarray | None,
) -> BetaSelection:
  """The memory the measurement asks for, with everything that led to it."""
  change, reasons = _limits(measured, pilot.moved, settings.change_estimate)
  rule = lambda change, candidates: beta_from_noise_and_lag(
    measured.noise, change, beta_range=settings.beta_range, grid=candidates
  )
  beta_continuous = rule(change, None)
  corrected = measured.corrected
  return BetaSelection(
    beta=float(beta_continuous if grid is None else rule(change, grid)),
    beta_continuous=float(beta_continuous),
    noise=measured.noise,
    change=float(change),
    lag_intercept=measured.lag_intercept,
    lag_slope=measured.lag_slope,
    lags=settings.lags,
    lag_changes=measured.lag_changes,
    horizon=float(1.0 / (1.0 - beta_continuous)),
    pilot_steps=settings.pilot_steps,
    pilot_beta=float(pilot_beta),
    num_probes=settings.num_probes,
    gradient_evaluations=pilot.gradient_evaluations,
    seconds=pilot.seconds,
    skipped_probes=pilot.skipped_probes,
    change_estimate=settings.change_estimate,
    corrected_change=corrected.change,
    corrected_change_stderr=corrected.stderr,
    corrected_lag_changes=corrected.lag_changes,
    noise_share=_noise_share(measured),
    intercept_clipped=measured.intercept_clipped,
    horizon_ceiling=measured.ceiling,
    beta_ceiling=float(rule(measured.probe_noise, grid)),
    pilot_moved=pilot.moved,
    design_limited=bool(reasons),
    design_reason="; ".join(reasons),
    pilot_params=pilot.params,
  )


def select_beta(
  make_optimizer: Callable[[float], optax.GradientTransformation],
  grad_fn: Callable[[Any, Any], Any],
  train_batch: Callable[[int], Any],
  params: Any,
  *,
  probe_batch: Callable[[int], Any] | None = None,
  pilot_steps: int = 200,
  pilot_beta: float = 0.95,
  lags: Sequence[int] = (20, 50, 100),
  num_probes: int = 16,
  num_groups: int = 4,
  sketch_dim: int = 1024,
  eps: float = 1e-8,
  beta_range: tuple[float, float] = (0.68377, 0.999),
  grid: Sequence[float] | np.ndarray | None = BETA_GRID,
  seed: int = 0,
  change_estimate: str = "published",
) -> BetaSelection:
  r"""[FH26c]'s early memory selection: measure noise and lag, choose beta.

  A pilot of :math:`T_p` updates of ``make_optimizer(pilot_beta)`` from
  ``params``. At the checkpoints :math:`T_p - n` (each lag :math:`n`) and
  :math:`T_p`, :math:`m` probe gradients, which never enter the optimizer,
  give the direction :math:`\hat r = \hat\mu / (\sqrt{\hat q} + \varepsilon)`
  pooled and per group of :math:`m/G`, sketched to :math:`z = P\hat r`. Then

  .. math::

    \hat V = \frac{m}{G-1}\,\frac{1}{G}\sum_j |z^{(j)} - z|^2, \qquad
    \frac{|z_{T_p} - z_{T_p-n}|^2}{n^2} \approx I + \frac{C}{n^2}, \qquad
    \hat D = I + \frac{C}{L^2},

  with :math:`L` the largest lag, and :math:`\beta` =
  :func:`~balanced_optax.beta_from_noise_and_lag` of :math:`(\hat V, \hat D)`.
  :math:`\hat D` keeps the probe noise :math:`2\hat V/(mL^2)`, which caps
  :math:`H` at :math:`(mL^2/8)^{1/3}`; ``change_estimate="noise_corrected"``
  uses :math:`\tilde D`, measured without it from the changes of independent
  groups of probes. A choice set by the design rather than the workload (a
  change not resolved above the probe noise, probe noise above half of
  :math:`\hat D`, parameters that did not move) is flagged
  ``design_limited`` with a ``RuntimeWarning``; where nothing moved nor
  changed, :math:`D = 0`.
  Training then starts from ``params`` with ``make_optimizer(selection.beta)``.
  It costs :math:`T_p + m(\#\text{lags} + 1)` gradients, 264 by default.
  Non-finite probe gradients are skipped (``skipped_probes``, a warning); under
  ``optax.MultiSteps`` the steps and lags count optimizer updates and each
  probe averages as many micro-batches as an update. See :doc:`choosing_beta`
  for the sketch, sharding, precision and what the estimates target.

  Args:
    make_optimizer: ``beta -> optax.GradientTransformation``, the run's recipe.
    grad_fn: ``(params, batch) -> grads`` (e.g. ``jax.grad(loss)``), a tree
      shaped like ``params``.
    train_batch: ``k -> batch`` of training batch ``k`` (0-based).
    params: initial parameters (any pytree, possibly sharded or complex, with
      at least one coordinate); not modified.
    probe_batch: ``i -> batch`` for probe batch ``i`` (0-based over all
      checkpoints); default ``train_batch(T_p k + i)`` for ``k`` batches per
      update, the batches after the pilot's.
    pilot_steps: :math:`T_p`, > every lag.
    pilot_beta: the pilot's memory, in [0, 1).
    lags: at least two distinct positive lags < ``pilot_steps``.
    num_probes: probe gradients per checkpoint, a multiple of ``num_groups``.
    num_groups: groups for the noise estimate, >= 2.
    sketch_dim: dimension of the sketch, >= 1.
    eps: the optimizer's epsilon, >= 0.
    beta_range: ``(low, high)``, ``0 <= low <= high < 1``: the memories
      allowed.
    grid: memories to snap to (restricted to ``beta_range`` as in
      :func:`~balanced_optax.beta_from_noise_and_lag`), or None.
    seed: fixes the sketch's buckets and signs.
    change_estimate: ``"published"`` ([FH26c]'s :math:`\hat D`) or
      ``"noise_corrected"`` (:math:`\tilde D`, without the probe noise).

  Returns:
    A :class:`BetaSelection`.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> import balanced_optax as bo
    >>> rng = np.random.default_rng(0)
    >>> w_true = rng.normal(size=(8,))
    >>> def batch(k):
    ...   x = np.random.default_rng(k).normal(size=(32, 8))
    ...   return x, x @ w_true + np.random.default_rng(k + 1).normal(size=32)
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> sel = bo.select_beta(
    ...   lambda beta: bo.balanced_adam(1e-2, beta=beta),
    ...   jax.grad(loss),
    ...   batch,
    ...   jnp.zeros(8),
    ...   pilot_steps=40,
    ...   lags=(5, 10, 20),
    ... )
    >>> print(sel.gradient_evaluations, sel.beta in bo.BETA_GRID)
    104 True
    >>> print(round(sel.horizon_ceiling, 2))  # (m L^2 / 8)^(1/3): D^'s ceiling
    9.28

  References:
    [FH26c] Fernandez-Hernandez, Perez-Corral, Dolz, Mestre, Quintana-Orti,
    Early Memory Selection for Balanced Adam, 2026.
  """
  settings = _check_arguments(
    make_optimizer,
    grad_fn,
    train_batch,
    probe_batch,
    params,
    pilot_steps=pilot_steps,
    pilot_beta=pilot_beta,
    lags=lags,
    num_probes=num_probes,
    num_groups=num_groups,
    sketch_dim=sketch_dim,
    eps=eps,
    beta_range=beta_range,
    grid=grid,
    seed=seed,
    change_estimate=change_estimate,
  )
  pilot = _run_pilot(
    make_optimizer,
    grad_fn,
    train_batch,
    probe_batch,
    params,
    settings,
    pilot_beta=pilot_beta,
    eps=eps,
  )
  measured = _estimate(pilot.sketches, settings.pilot_steps, settings.lags)
  selection = _selection(measured, pilot, settings, pilot_beta=pilot_beta, grid=grid)
  if selection.design_limited:
    advice = (
      "Longer lags or more probes resolve longer memories"
      if selection.pilot_moved
      else "Check the learning rate"
    )
    warnings.warn(
      f"select_beta: beta={selection.beta:.5g} is set by the probe design, not"
      f" measured from the workload: {selection.design_reason}. {advice}"
      " (docs/choosing_beta.md).",
      RuntimeWarning,
      stacklevel=2,
    )
  return selection
