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
    change: :math:`\hat D = I + C/L^2`, its squared change per update.
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
    pilot_params: parameters after the pilot's updates
      (``sel._replace(pilot_params=None)`` frees them).
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
  pilot_params: Any = None

  def as_dict(self) -> dict[str, Any]:
    """The scalar fields as plain Python values (JSON-ready; no params)."""
    d = self._asdict()
    d.pop("pilot_params")
    for name in ("lags", "lag_changes", "skipped_probes"):
      d[name] = list(d[name])
    return d

  def report(self) -> str:
    """One line for a training log."""
    skipped = len(self.skipped_probes)
    return (
      f"beta={self.beta:.5f} (continuous {self.beta_continuous:.5f},"
      f" H={self.horizon:.1f}) from noise V={self.noise:.4g},"
      f" change D={self.change:.4g} (I={self.lag_intercept:.4g},"
      f" C={self.lag_slope:.4g}, lags {list(self.lags)});"
      f" pilot {self.pilot_steps} updates at beta={self.pilot_beta:g},"
      f" {self.gradient_evaluations} gradients"
      + (f" ({skipped} non-finite probes skipped)" if skipped else "")
      + f", {self.seconds:.1f} s"
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


# --- select_beta: checks, the pilot, the estimate, the selection --------------


class _Settings(NamedTuple):
  """select_beta's checked arguments."""

  pilot_steps: int
  lags: tuple[int, ...]  # distinct, ascending
  num_probes: int
  num_groups: int
  sketch_dim: int
  beta_range: tuple[float, float]
  seed: int


class _Pilot(NamedTuple):
  """What the pilot ran and measured."""

  sketches: dict[int, _probes.Sketches]  # by pilot update
  params: Any
  gradient_evaluations: int
  skipped_probes: tuple[int, ...]
  seconds: float


class _Measurement(NamedTuple):
  """V and D as estimated from the sketches."""

  noise: float
  change: float
  lag_intercept: float
  lag_slope: float
  lag_changes: tuple[float, ...]


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

  Returns the new params and state, the batches used so far and the
  micro-batches the update averaged.
  """
  if _accumulation(opt_state) is None:
    params, opt_state = train_step(params, opt_state, train_batch(used))
    return params, opt_state, used + 1, 1
  mini, updates = _counts(opt_state)
  for _ in range(_MAX_MICRO_BATCHES):
    params, opt_state = train_step(params, opt_state, train_batch(used))
    used += 1
    new_mini, new_updates = _counts(opt_state)
    if new_updates > updates:
      return params, opt_state, used, mini + 1
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
    return optax.apply_updates(params, updates), opt_state

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
  sketches, skipped = {}, []
  used = drawn = probes = 0  # training batches, probe batches, probes
  micro = 1  # micro-batches per update (optax.MultiSteps)
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
      params, opt_state, used, micro = _one_update(
        train_step, params, opt_state, train_batch, used
      )
  params = jax.block_until_ready(params)
  if skipped:
    _warn_skipped(skipped)
  return _Pilot(
    sketches=sketches,
    params=params,
    gradient_evaluations=used + drawn,
    skipped_probes=tuple(i for _, i in skipped),
    seconds=time.perf_counter() - start,
  )


def _estimate(
  sketches: dict[int, _probes.Sketches], pilot_steps: int, lags: tuple[int, ...]
) -> _Measurement:
  """V from the groups at the last checkpoint, D from the pooled sketches' lags."""
  end = sketches[pilot_steps]
  noise = _noise_estimate(end.z, end.groups, end.sizes)
  y = np.array(
    [_squared_norm(end.z - sketches[pilot_steps - n].z) / n**2 for n in lags]
  )
  intercept, slope = _lag_fit(np.asarray(lags), y)
  intercept, slope = max(intercept, 0.0), max(slope, 0.0)
  return _Measurement(
    noise=noise,
    change=float(intercept + slope / lags[-1] ** 2),
    lag_intercept=intercept,
    lag_slope=slope,
    lag_changes=tuple(float(v) for v in y),
  )


def _selection(
  measured: _Measurement,
  pilot: _Pilot,
  settings: _Settings,
  *,
  pilot_beta: float,
  grid: Sequence[float] | np.ndarray | None,
) -> BetaSelection:
  """The memory the measurement asks for, with everything that led to it."""
  rule = lambda candidates: beta_from_noise_and_lag(
    measured.noise, measured.change, beta_range=settings.beta_range, grid=candidates
  )
  beta_continuous = rule(None)
  return BetaSelection(
    beta=float(beta_continuous if grid is None else rule(grid)),
    beta_continuous=float(beta_continuous),
    noise=measured.noise,
    change=measured.change,
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
  return _selection(measured, pilot, settings, pilot_beta=pilot_beta, grid=grid)
