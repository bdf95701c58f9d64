r"""Statistics of the gradient's moments, cheap enough to log from a train step.

Balanced Adam's direction is a sign step shrunk by the gradient's
signal-to-noise ratio [OG25]: with mean :math:`\mu` and variance
:math:`\sigma^2` per coordinate,

.. math::

  d = \frac{\mu}{\sqrt{\mu^2 + \sigma^2} + \varepsilon}
    = \operatorname{sign}(\mu)\,\rho, \qquad
  \rho \approx \frac{1}{\sqrt{1 + 1/\mathrm{SNR}}}, \qquad
  \mathrm{SNR} = \frac{\mu^2}{\sigma^2}.

:func:`moments_from_state` reads :math:`(\mu, \sigma^2)` out of an optimizer
state and :func:`moment_statistics` summarises them over a model, so a train
step can log ``moment_statistics(moments_from_state(opt_state, beta))``.
See :doc:`research_tools` for what each reads and what logging costs.
"""

import collections.abc
import itertools
import sys
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import GetAttrKey
from optax.tree_utils import NamedTupleKey

from balanced_optax import _checks, _tree, lowbit
from balanced_optax.adam import ScaleSafeAdamState
from balanced_optax.moments import GradientMoments, VarianceEmaState, read_adam_moments

_MOMENT_STATES = (
  optax.ScaleByAdamState,
  ScaleSafeAdamState,
  VarianceEmaState,
  lowbit.LowBitAdamState,
)
# Hyperparameter names that hold the Adam memory, most specific first: a Muon
# optimizer's 'beta' is its momentum, and its Adam half has its own.
_BETA_KEYS = (("adam_beta",), ("adam_b1", "adam_b2"), ("beta",), ("b1", "b2"))

_Betas = tuple[Any, Any]


def _leaf_name(path) -> str:
  """'layers/0/kernel' from a key path; drops nnx.Variable's '.value' hop."""
  path = [k for k in path if not (isinstance(k, GetAttrKey) and k.name == "value")]
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/") or "root"


def _leaf_sums(mean, variance, eps):
  """Per-coordinate SNR and the leaf's sums of the logged quantities."""
  m2 = jnp.square(jnp.abs(_tree.upcast(mean)))  # |mean|^2, also for complex.
  v = jnp.real(_tree.upcast(variance))
  # A zero coordinate (m = v = 0) has SNR 0 and rho 0, also with eps = 0.
  snr = jnp.where(m2 == 0, 0, m2 / (v + eps * eps))
  denom = jnp.sqrt(m2 + v) + eps
  rho = jnp.where(denom > 0, jnp.sqrt(m2) / jnp.where(denom > 0, denom, 1), 0)
  sums = {
    "snr_mean": jnp.sum(snr),
    "sign_dominated_fraction": jnp.sum(m2 > v, dtype=snr.dtype),
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

  Over the :math:`N` coordinates :math:`i` of the tree, with mean
  :math:`\mu_i` and variance :math:`\sigma_i^2`:

  .. math::

    \mathrm{SNR}_i = \frac{|\mu_i|^2}{\sigma_i^2 + \varepsilon^2}, \qquad
    \rho_i = \frac{|\mu_i|}{\sqrt{|\mu_i|^2 + \sigma_i^2} + \varepsilon}, \qquad
    \text{update\_rms} = \Bigl(\frac{1}{N}\sum_i \rho_i^2\Bigr)^{1/2},

  and coordinate :math:`i` is sign-dominated when :math:`|\mu_i| > \sigma_i`.
  :math:`\rho_i \in [0, 1]` is the magnitude of the Adam direction (1 a full
  sign step, 0 a fully damped one). A zero coordinate counts as SNR 0 and
  :math:`\rho = 0`; ``optax.MaskedNode`` leaves hold no coordinates. See
  :doc:`research_tools` for complex moments and for what logging costs.

  Args:
    moments: :class:`GradientMoments` (e.g. from :func:`moments_from_state`,
      :func:`balanced_optax.tied_moments` or :func:`balanced_optax.variance_ema`).
    eps: Adam's eps, >= 0, used in :math:`\rho` and as the SNR floor.
    per_leaf: also report each leaf's statistics.
    median: compute the median SNR (a sort of all coordinates, the costly
      one; pass ``False`` when logging every step).

  Returns:
    A flat dict of 0-d arrays averaged over all coordinates: ``snr_mean``,
    ``snr_median`` (if ``median``), ``sign_dominated_fraction``,
    ``shrinkage_mean`` and ``update_rms``; with ``per_leaf=True`` also
    ``f"{key}/{path}"`` per leaf, e.g. ``"snr_mean/layers/0/kernel"``.

  Raises:
    ValueError: if ``eps`` is not a real number >= 0, ``moments.mean`` and
      ``moments.variance`` differ in tree structure or in a leaf's shape, or
      they hold no coordinates.

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
  _checks.check_interval("eps", eps, 0.0)
  mean_leaves, treedef = jax.tree_util.tree_flatten_with_path(moments.mean)
  variance_leaves, variance_treedef = jax.tree.flatten(moments.variance)
  if treedef != variance_treedef:
    raise ValueError(
      "moments.mean and moments.variance have different trees:"
      f"\n  mean:     {treedef}\n  variance: {variance_treedef}"
    )
  for (path, m), v in zip(mean_leaves, variance_leaves, strict=True):
    if jnp.shape(m) != jnp.shape(v):
      raise ValueError(
        f"moments.mean and moments.variance differ in shape at {_leaf_name(path)}:"
        f" {jnp.shape(m)} and {jnp.shape(v)}."
      )
  stats: dict[str, jax.Array] = {}
  totals: dict[str, jax.Array] = {}
  snr_leaves: list[jax.Array] = []
  size = 0
  for (path, m), v in zip(mean_leaves, variance_leaves, strict=True):
    if m.size == 0:
      continue
    snr, sums = _leaf_sums(m, v, eps)
    if per_leaf:
      name = _leaf_name(path)
      leaf = _finish(sums, m.size, snr, median)
      stats.update({f"{key}/{name}": value for key, value in leaf.items()})
    totals = {k: totals.get(k, 0) + s for k, s in sums.items()}
    snr_leaves.append(snr.ravel())
    size += m.size
  if not size:
    raise ValueError("moments hold no coordinates.")
  all_snr = jnp.concatenate(snr_leaves) if median else None
  return {**_finish(totals, size, all_snr, median), **stats}


def _from_flax_nnx(opt_state):
  """The optax state in a flax nnx optimizer's state; any other state as is.

  ``nnx.Optimizer.opt_state`` wraps each array in an ``nnx.Variable``;
  ``nnx.split(optimizer)`` (and ``nnx.to_pure_dict`` of it) also turns each
  NamedTuple into a mapping of its fields, and a chain's tuple into integer
  keys. The arrays are unwrapped, and since a split state has lost the
  NamedTuple types, in a state that is a mapping each mapping with exactly a
  moment state's fields becomes that state again.
  """
  nnx = sys.modules.get("flax.nnx")
  if nnx is not None:  # Else flax is not loaded and the state holds none of it.
    opt_state = nnx.as_pure(opt_state)
  by_fields = {frozenset(state._fields): state for state in _MOMENT_STATES}

  def restore(node):
    if not isinstance(node, collections.abc.Mapping):
      return node
    fields = {key: restore(value) for key, value in node.items()}
    state = by_fields.get(frozenset(fields))
    return fields if state is None else state(**fields)

  return restore(opt_state)


def _where(path) -> str:
  path = [GetAttrKey(k.name) if isinstance(k, NamedTupleKey) else k for k in path]
  return jax.tree_util.keystr(tuple(path)) or "the root"


def _labels(path) -> list[Any]:
  """The optax.partition labels on the way to a state (the keys of each
  ``inner_states`` it is in), nearest first."""
  # A field is a NamedTupleKey's name, or a DictKey's key in a split nnx state.
  hops = [getattr(key, "name", getattr(key, "key", None)) for key in path]
  pairs = itertools.pairwise(hops)
  return [label for hop, label in pairs if hop == "inner_states"][::-1]


def _label_for(path, beta) -> Any:
  """The nearest partition label on the path that the beta mapping names."""
  return next((label for label in _labels(path) if label in beta), None)


def _moment_states(opt_state) -> list[tuple[Any, Any]]:
  """(path, state) of each moment state in ``opt_state`` that holds coordinates."""
  found = []
  for state_type in _MOMENT_STATES:
    for path, state in optax.tree.get_all_with_path(opt_state, state_type.__name__):
      # Muon's Adam group over matrices only holds no moments.
      if isinstance(state, state_type) and _holds_moments(state):
        found.append((path, state))
  return found


def _holds_moments(state) -> bool:
  if isinstance(state, lowbit.LowBitAdamState):  # Its layout is no moment.
    return bool(jax.tree.leaves((state.codes, state.mu)))
  return bool(jax.tree.leaves(state[1:]))  # Past the count.


def _injected_betas(opt_state) -> list[tuple[Any, _Betas]]:
  """(path, betas) of each inject_hyperparams state that names an Adam memory,
  innermost first."""
  is_mapping = lambda _, value: isinstance(value, collections.abc.Mapping)
  found = []
  for path, hyperparams in optax.tree.get_all_with_path(
    opt_state, "hyperparams", is_mapping
  ):
    for names in _BETA_KEYS:
      if all(name in hyperparams for name in names):
        betas = (hyperparams[names[0]], hyperparams[names[-1]])
        found.append((path[:-1], betas))
        break
  return sorted(found, key=lambda item: -len(item[0]))


def _betas_for(path, beta, injected) -> _Betas | None:
  """A state's betas: from ``beta``, else from the innermost
  inject_hyperparams state around it (None if neither has one)."""
  if isinstance(beta, collections.abc.Mapping):
    label = _label_for(path, beta)
    if label is not None:
      return _as_pair(beta[label])
  elif beta is not None:
    return _as_pair(beta)
  return next((betas for at, betas in injected if path[: len(at)] == at), None)


def _as_pair(value) -> _Betas:
  return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _check_beta_argument(beta) -> None:
  """ValueError unless ``beta`` is None, a memory in [0, 1), a pair of them or
  a mapping from labels to either (traced values pass; they are jit's)."""
  entries = (
    beta.items() if isinstance(beta, collections.abc.Mapping) else [(None, beta)]
  )
  for label, value in entries:
    name = "beta" if label is None else f"beta[{label!r}]"
    if value is None and label is None:
      continue
    if isinstance(value, tuple | list):
      if len(value) != 2:
        raise ValueError(
          f"{name} must be a memory in [0.0, 1.0) or a pair (beta1, beta2) of"
          f" them, got {value!r}."
        )
      for i, b in enumerate(value):
        _checks.check_beta(f"{name}[{i}]", b)
    else:
      _checks.check_beta(name, value)


def _read(state, betas: _Betas | None) -> GradientMoments:
  """Debiased (mean, real variance) of one moment state, in at least float32."""
  if isinstance(state, VarianceEmaState):
    variance = jax.tree.map(jnp.real, _tree.upcast(state.variance))
    return GradientMoments(_tree.upcast(state.mean), variance)
  mu = state.mu
  if isinstance(state, ScaleSafeAdamState):
    nu = jax.tree.map(lambda rms: jnp.square(_tree.upcast(rms)), state.rms)
  elif isinstance(state, lowbit.LowBitAdamState):
    mu, nu = lowbit.moments(state)
  else:
    nu = state.nu
  assert betas is not None, "an Adam state is read with its betas"
  # count 0 (no update yet): the moments are 0, and so are mean and variance.
  count = jnp.maximum(state.count, 1)
  return read_adam_moments(mu, nu, count, *betas)


def _merge(parts: list[tuple[str, GradientMoments]]) -> GradientMoments:
  """One GradientMoments from states over disjoint parts of one params tree,
  with ``optax.MaskedNode`` where no state covers a leaf."""
  is_hole = lambda x: isinstance(x, optax.MaskedNode)
  flat = [jax.tree.flatten(moments, is_leaf=is_hole) for _, moments in parts]
  treedef = flat[0][1]
  if any(other != treedef for _, other in flat):
    raise ValueError(
      "moments_from_state found moment states over different trees at "
      + ", ".join(where for where, _ in parts)
      + "; they cannot be merged into one GradientMoments. Pass each one's"
      " sub-state to moments_from_state separately."
    )
  merged = []
  for position, leaves in enumerate(zip(*(leaves for leaves, _ in flat), strict=True)):
    owners = [i for i, leaf in enumerate(leaves) if not is_hole(leaf)]
    if len(owners) > 1:
      raise ValueError(
        f"moments_from_state found two moment states over the same coordinates"
        f" (leaf {position} of the mean/variance tree) at "
        + " and ".join(parts[i][0] for i in owners)
        + ": ambiguous. Pass the sub-state you want to moments_from_state."
      )
    merged.append(leaves[owners[0]] if owners else optax.MaskedNode())
  return jax.tree.unflatten(treedef, merged)


def moments_from_state(
  opt_state: optax.OptState,
  beta: float
  | tuple[float, float]
  | collections.abc.Mapping[Any, float | tuple[float, float]]
  | None = None,
) -> GradientMoments | None:
  r"""The debiased gradient mean and variance held in an optimizer state.

  Finds every ``optax.ScaleByAdamState``, ``ScaleSafeAdamState`` (with
  :math:`\nu = \text{rms}^2`), low-bit ``LowBitAdamState`` (decoded by
  ``lowbit.moments``) and ``VarianceEmaState`` in ``opt_state``, in
  any optax wrapper and in a flax nnx optimizer's state, and reads each Adam
  state as :func:`balanced_optax.tied_moments` emits it: with
  :math:`c_i = 1 - \beta_i^{\max(\text{count}, 1)}`,

  .. math::

    \text{mean} = \mu / c_1, \qquad
    \text{variance} = \max(\operatorname{Re}\nu / c_2 - |\text{mean}|^2,\ 0),

  and a ``VarianceEmaState`` as it is. States over disjoint leaves (under
  ``optax.partition`` or ``optax.masked``) are merged into one tree shaped
  like the params, with ``optax.MaskedNode`` where no state covers a leaf;
  states with no coordinates (Muon's Adam group over matrices only) are
  skipped. See :doc:`research_tools` for the wrappers, nnx states and which
  optimizers' states read meaningfully.

  Args:
    opt_state: an optimizer state; jit-traced states are fine.
    beta: the EMA memory to debias Adam states with: a float (tied), a pair
      ``(beta1, beta2)``, or a mapping from ``optax.partition`` labels (any
      hashable) to either, e.g. ``{"embed": 0.99, "rest": 0.95}``; a state
      takes the entry of the nearest enclosing label the mapping names. Where
      ``beta`` gives none, the nearest enclosing ``optax.inject_hyperparams``
      state's ``'adam_beta'``, ``'adam_b1'`` and ``'adam_b2'`` (Muon's Adam
      half), ``'beta'``, or ``'b1'`` and ``'b2'`` (the first present) is used.

  Returns:
    :class:`GradientMoments` (mean, variance) in at least float32, each a
    tree shaped like the params, or None if the state holds no moments with
    coordinates.

  Raises:
    ValueError: if ``beta`` (or an entry of it) is not a memory in [0, 1) or a
      pair of them, an Adam state has no beta, a label of a ``beta`` mapping
      is on no state's path, or the states cover the same coordinates or
      different trees; the message names the states' paths.

  Example:
    Two balanced groups with their own betas, one read from
    ``inject_hyperparams``, the other passed by label:

    >>> import jax.numpy as jnp, numpy as np, optax
    >>> import balanced_optax as bo
    >>> tx = optax.partition(
    ...   {
    ...     "a": optax.inject_hyperparams(bo.balanced_adam)(0.1, beta=0.5),
    ...     "b": bo.balanced_adam(0.1, beta=0.9),
    ...   },
    ...   {"w": "a", "b": "b"},
    ... )
    >>> params = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    >>> state = tx.init(params)
    >>> for g in ([1.0, -2.0], [3.0, -2.0]):
    ...   grads = {"w": jnp.array(g), "b": jnp.array(g[:1])}
    ...   _, state = tx.update(grads, state, params)
    >>> moments = bo.moments_from_state(state, beta={"b": 0.9})
    >>> with np.printoptions(precision=4):
    ...   print(moments.mean["w"], moments.variance["w"])
    ...   print(moments.mean["b"], moments.variance["b"])
    [ 2.3333 -2.    ] [0.8889 0.    ]
    [2.0526] [0.9972]

  References:
    Orvieto & Gower, In Search of Adam's Secret Sauce, arXiv 2505.21829, 2025.
  """
  _check_beta_argument(beta)
  opt_state = _from_flax_nnx(opt_state)
  found = _moment_states(opt_state)
  if isinstance(beta, collections.abc.Mapping):
    used = [_label_for(path, beta) for path, _ in found]
    unused = [label for label in beta if label not in used]
    if unused:
      raise ValueError(
        f"beta names labels {unused} that are on no moment state's path;"
        " the states found are at "
        + (", ".join(f"{_where(p)} (labels {_labels(p)})" for p, _ in found) or "none")
        + "."
      )
  if not found:
    return None
  injected = _injected_betas(opt_state)
  parts, missing = [], []
  for path, state in found:
    betas = _betas_for(path, beta, injected)
    if betas is None and not isinstance(state, VarianceEmaState):
      missing.append(f"an Adam moment state at {_where(path)} (labels {_labels(path)})")
    else:
      parts.append((_where(path), _read(state, betas)))
  if missing:
    raise ValueError(
      f"moments_from_state found {', '.join(missing)} but no beta to debias it"
      " with: pass beta=<float>, beta=(b1, b2), or beta={label: beta} for"
      " several groups, or build the optimizer with optax.inject_hyperparams"
      " so that 'beta' is in its hyperparams."
    )
  return _merge(parts)
