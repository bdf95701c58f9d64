r"""Statistics of the gradient's moments, cheap enough to log from a train step.

Balanced Adam's direction is a sign step shrunk by the gradient's
signal-to-noise ratio [OG25]: with mean :math:`\mu` and variance
:math:`\sigma^2` per coordinate,

.. math::

  d = \frac{\mu}{\sqrt{\mu^2 + \sigma^2} + \varepsilon}
    = \operatorname{sign}(\mu)\,\rho, \qquad
  \rho = \frac{|\mu|}{\sqrt{\mu^2 + \sigma^2} + \varepsilon}
  \approx \frac{1}{\sqrt{1 + 1/\mathrm{SNR}}}, \qquad
  \mathrm{SNR} = \frac{\mu^2}{\sigma^2}.

:func:`moment_statistics` summarises these quantities over a model and
:func:`moments_from_state` reads :math:`(\mu, \sigma^2)` out of an optimizer
state, so a train step can log
``moment_statistics(moments_from_state(opt_state, beta))``.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from balanced_optax.adam import ScaleSafeAdamState
from balanced_optax.moments import GradientMoments, VarianceEmaState

_MOMENT_STATES = (optax.ScaleByAdamState, ScaleSafeAdamState, VarianceEmaState)
_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _upcast(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _path_name(path) -> str:
  """'layers/0/kernel' from a key path; drops nnx.Variable's '.value' hop."""
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey):
      if key.name != "value":
        parts.append(key.name)
    elif isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    else:
      parts.append(str(getattr(key, "key", key)))
  return "/".join(parts) or "root"


def _leaf_sums(mean, variance, eps):
  """Per-coordinate SNR and the leaf's sums of the logged quantities."""
  m, v = _upcast(mean), _upcast(variance)
  # A zero coordinate (m = v = 0) has SNR 0 and rho 0, also with eps = 0.
  snr = jnp.where(m == 0, 0, m * m / (v + eps * eps))
  denom = jnp.sqrt(m * m + v) + eps
  rho = jnp.where(denom > 0, jnp.abs(m) / jnp.where(denom > 0, denom, 1), 0)
  sums = {
    "snr_mean": jnp.sum(snr),
    "sign_dominated_fraction": jnp.sum(m * m > v, dtype=snr.dtype),
    "shrinkage_mean": jnp.sum(rho),
    "update_rms": jnp.sum(rho * rho),  # |d| = rho, so mean(d^2) = mean(rho^2).
  }
  return snr, sums


def _finish(sums, size, snr_values, median):
  stats = {key: total / size for key, total in sums.items()}
  stats["update_rms"] = jnp.sqrt(stats["update_rms"])
  if median:
    stats["snr_median"] = jnp.median(snr_values)
  return stats


def moment_statistics(
  moments: GradientMoments,
  eps: float = 1e-8,
  *,
  per_leaf: bool = False,
  median: bool = True,
) -> dict[str, jax.Array]:
  r"""Signal-to-noise statistics of the gradient moments, for logging.

  Over the N coordinates i of the tree:

  .. math::

    \mathrm{SNR}_i = \frac{\mu_i^2}{\sigma_i^2 + \varepsilon^2}, \qquad
    \rho_i = \frac{|\mu_i|}{\sqrt{\mu_i^2 + \sigma_i^2} + \varepsilon}, \qquad
    \text{update\_rms} = \Bigl(\frac{1}{N}\sum_i \rho_i^2\Bigr)^{1/2}.

  Per coordinate, with mean :math:`\mu` and variance :math:`\sigma^2`:

  * ``snr`` :math:`= \mu^2 / (\sigma^2 + \varepsilon^2)`; the floor
    :math:`\varepsilon^2` keeps a noiseless coordinate finite (a constant
    gradient of size 1 gives :math:`10^{16}` at the default eps; with
    ``eps=0`` it is ``inf``). A zero coordinate (:math:`\mu = 0`, e.g. a
    frozen parameter) counts as SNR 0 and :math:`\rho = 0`.
  * sign-dominated: :math:`|\mu| > \sigma`, i.e. SNR > 1 (Adam's step is then
    closer to Signum's than to a noise-damped one).
  * shrinkage :math:`\rho = |\mu| / (\sqrt{\mu^2 + \sigma^2} + \varepsilon)`
    in [0, 1]: 1 is a full sign step, 0 a fully damped one.
  * the Adam direction :math:`d = \mu / (\sqrt{\mu^2+\sigma^2}+\varepsilon)`,
    whose magnitude is :math:`\rho`, so its RMS is
    :math:`\sqrt{\operatorname{mean}\rho^2}` (the update RMS before the
    learning rate).

  Returned keys (0-d arrays, averaged over all coordinates of the tree):
  ``snr_mean``, ``snr_median`` (if ``median``), ``sign_dominated_fraction``,
  ``shrinkage_mean``, ``update_rms``; with ``per_leaf=True`` also
  ``f"{key}/{path}"`` for every leaf, e.g. ``"snr_mean/layers/0/kernel"``.

  Cost: one elementwise pass and four sums per leaf, in at least float32; it
  jits and runs inside a train step (on CPU about 2 ms per million
  coordinates). The median is the expensive part: it concatenates all
  coordinates (a copy of the model's size) and sorts them,
  :math:`O(N \log N)`: on CPU about 0.25 s per million coordinates, ~100x the
  rest (a GPU sort is much faster). Pass ``median=False`` when logging every
  step, and log the median every few hundred steps instead.

  Args:
    moments: :class:`GradientMoments` (e.g. from :func:`moments_from_state`,
      :func:`balanced_optax.tied_moments` or :func:`balanced_optax.variance_ema`).
    eps: Adam's eps, >= 0, used in :math:`\rho` and as the SNR floor.
    per_leaf: also report each leaf's statistics.
    median: compute the median SNR (the costly one).

  Returns:
    A flat dict of scalar arrays with the keys above.

  Example:
    >>> import jax.numpy as jnp
    >>> import balanced_optax as bo
    >>> moments = bo.GradientMoments(
    ...   mean={"w": jnp.array([1.0, 0.5, 0.0])},
    ...   variance={"w": jnp.array([0.25, 1.0, 4.0])},
    ... )
    >>> stats = bo.moment_statistics(moments)
    >>> for key, value in sorted(stats.items()):
    ...   print(f"{key}: {value:.4f}")
    shrinkage_mean: 0.4472
    sign_dominated_fraction: 0.3333
    snr_mean: 1.4167
    snr_median: 0.2500
    update_rms: 0.5774

  References:
    Orvieto & Gower, In Search of Adam's Secret Sauce, arXiv 2505.21829, 2025.
  """
  if not isinstance(moments, GradientMoments):
    raise TypeError(
      "moment_statistics expects GradientMoments(mean, variance), got"
      f" {type(moments).__name__}; moments_from_state returns None when the"
      " optimizer state holds no Adam moments."
    )
  mean_leaves = jax.tree_util.tree_flatten_with_path(moments.mean)[0]
  variance_leaves = jax.tree.leaves(moments.variance)
  if len(mean_leaves) != len(variance_leaves):
    raise ValueError("moments.mean and moments.variance have different trees.")
  stats, totals, all_snr, size = {}, {}, [], 0
  for (path, m), v in zip(mean_leaves, variance_leaves, strict=True):
    if m.size == 0:
      continue
    snr, sums = _leaf_sums(m, v, eps)
    if per_leaf:
      name = _path_name(path)
      leaf = _finish(sums, m.size, snr, median)
      stats.update({f"{key}/{name}": value for key, value in leaf.items()})
    totals = {k: totals.get(k, 0) + s for k, s in sums.items()}
    all_snr.append(snr.ravel())
    size += m.size
  if not size:
    raise ValueError("moments hold no coordinates.")
  all_snr = jnp.concatenate(all_snr) if median else None
  return {**_finish(totals, size, all_snr, median), **stats}


def _betas(value) -> tuple[Any, Any]:
  return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _betas_from_hyperparams(hyperparams) -> tuple[Any, Any] | None:
  """(b1, b2) from inject_hyperparams' dict: 'beta', or optax.adam's 'b1', 'b2'."""
  scalar = lambda x: jax.tree.leaves(x)[0]  # Unwraps e.g. nnx.OptArray.
  if "beta" in hyperparams:
    return _betas(scalar(hyperparams["beta"]))
  if "b1" in hyperparams and "b2" in hyperparams:
    return scalar(hyperparams["b1"]), scalar(hyperparams["b2"])
  return None


def _find_moment_state(tree, betas):
  """First moment state in tree order, with the betas that apply to it."""
  is_state = lambda x: isinstance(x, _MOMENT_STATES + _INJECT_STATES)
  for node in jax.tree.leaves(tree, is_leaf=is_state):
    if isinstance(node, _INJECT_STATES):
      inner = betas or _betas_from_hyperparams(node.hyperparams)
      found = _find_moment_state(node.inner_state, inner)
      if found is not None:
        return found
    elif isinstance(node, _MOMENT_STATES):
      return node, betas
  return None


def moments_from_state(
  opt_state: optax.OptState, beta: float | tuple[float, float] | None = None
) -> GradientMoments | None:
  r"""The debiased gradient mean and variance held in an optimizer state.

  Walks any optax state tree (chains, ``inject_hyperparams``,
  ``apply_if_finite``, ``MultiSteps``, ``masked``, ``multi_transform``, and
  ``flax.nnx.Optimizer.opt_state``) and uses the first of these it meets:

  * ``optax.ScaleByAdamState(count, mu, nu)`` (``optax.adam``,
    :func:`balanced_optax.balanced_adam`, :func:`balanced_optax.tied_moments`):
    with :math:`c_i = 1 - \beta_i^{\max(\text{count}, 1)}`,

    .. math::

      \text{mean} = \mu / c_1, \qquad
      \text{variance} = \max(\nu / c_2 - \text{mean}^2,\ 0);

  * ``ScaleSafeAdamState(count, mu, rms)`` (``scale_safe=True``): the same
    with :math:`\nu = \text{rms}^2`;
  * ``VarianceEmaState(count, mean, variance)``
    (:func:`balanced_optax.variance_ema`): its fields as they are (they are
    the debiased moments when ``debias=True``; ``beta`` is not needed).

  Before the first update (count 0) the moments are zero. For an untied Adam
  state (:math:`\beta_1 \ne \beta_2`) the "variance" mixes two memories and is
  only a rough estimate.

  Args:
    opt_state: an optimizer state; jit-traced states are fine.
    beta: the EMA memory to debias with: a float (tied), or a pair
      ``(beta1, beta2)``. If None, it is read from an enclosing
      ``optax.inject_hyperparams`` state whose hyperparams hold ``'beta'`` (or
      ``'b1'`` and ``'b2'``); it is required for Adam states otherwise.

  Returns:
    :class:`GradientMoments` (mean, variance) in at least float32, each shaped
    like the params, or None if the state holds no moments.

  Raises:
    ValueError: if an Adam state is found but no beta is known.

  Example:
    >>> import jax.numpy as jnp, numpy as np, optax
    >>> import balanced_optax as bo
    >>> tx = optax.inject_hyperparams(bo.balanced_adam)(learning_rate=0.1, beta=0.5)
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> for g in ([1.0, -2.0], [3.0, -2.0]):
    ...   _, state = tx.update({"w": jnp.array(g)}, state)
    >>> moments = bo.moments_from_state(state)  # beta read from the hyperparams
    >>> with np.printoptions(precision=4):
    ...   print(moments.mean["w"], moments.variance["w"])
    [ 2.3333 -2.    ] [0.8889 0.    ]

  References:
    Orvieto & Gower, In Search of Adam's Secret Sauce, arXiv 2505.21829, 2025.
  """
  found = _find_moment_state(opt_state, None if beta is None else _betas(beta))
  if found is None:
    return None
  state, betas = found
  if isinstance(state, VarianceEmaState):
    return GradientMoments(
      jax.tree.map(_upcast, state.mean), jax.tree.map(_upcast, state.variance)
    )
  if betas is None:
    raise ValueError(
      f"moments_from_state found {type(state).__name__} but no beta to debias"
      " it with: pass beta=... (or build the optimizer with"
      " optax.inject_hyperparams so that 'beta' is in its hyperparams)."
    )
  count = jnp.maximum(jax.tree.leaves(state.count)[0], 1)
  c1, c2 = (1 - jnp.asarray(b) ** count for b in betas)
  if isinstance(state, ScaleSafeAdamState):
    nu = jax.tree.map(lambda r: jnp.square(_upcast(r)), state.rms)
  else:
    nu = jax.tree.map(_upcast, state.nu)
  mean = jax.tree.map(lambda m: _upcast(m) / c1, state.mu)
  variance = jax.tree.map(lambda n, m: jnp.maximum(n / c2 - m * m, 0), nu, mean)
  return GradientMoments(mean, variance)
