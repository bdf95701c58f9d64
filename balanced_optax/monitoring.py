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

import collections.abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import DictKey, GetAttrKey

from balanced_optax import _checks, _tree
from balanced_optax.adam import ScaleSafeAdamState
from balanced_optax.moments import (
  GradientMoments,
  VarianceEmaState,
  read_adam_moments,
)

# The second-moment field of each state read, by the state's field names.
_MOMENT_TYPES = {
  optax.ScaleByAdamState: "nu",
  ScaleSafeAdamState: "rms",
  VarianceEmaState: "variance",
}
_MOMENT_FIELDS = {frozenset(t._fields): second for t, second in _MOMENT_TYPES.items()}
_INJECT_FIELDS = frozenset({"count", "hyperparams", "inner_state"})
# Hyperparameter names that hold the Adam memory, most specific first: a Muon
# optimizer's 'beta' is its momentum, and its Adam half has its own.
_BETA_KEYS = (("adam_beta",), ("adam_b1", "adam_b2"), ("beta",), ("b1", "b2"))


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

  Over the N coordinates i of the tree:

  .. math::

    \mathrm{SNR}_i = \frac{\mu_i^2}{\sigma_i^2 + \varepsilon^2}, \qquad
    \rho_i = \frac{|\mu_i|}{\sqrt{\mu_i^2 + \sigma_i^2} + \varepsilon}, \qquad
    \text{update\_rms} = \Bigl(\frac{1}{N}\sum_i \rho_i^2\Bigr)^{1/2}.

  For complex gradients :math:`\mu_i^2` reads :math:`|\mu_i|^2` and the
  variance is the real :math:`E|g - \mu|^2` (as :func:`moments_from_state`
  returns it). Leaves that are ``optax.MaskedNode`` (no moment state covers
  them, e.g. Muon's matrices) hold no coordinates and are not counted.

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


def _fields(node) -> dict[str, Any] | None:
  """A node's fields by name, if it is a NamedTuple or a mapping (else None)."""
  if isinstance(node, tuple) and hasattr(node, "_fields"):
    return node._asdict()  # type: ignore[attr-defined]  # a NamedTuple
  if isinstance(node, collections.abc.Mapping):
    return dict(node)
  return None


def _second_field(node) -> str | None:
  """The second-moment field name if ``node`` is a moment state, else None.

  optax states are recognised by type. ``nnx.split`` turns every NamedTuple
  of an optimizer state into a mapping of its fields, so there a mapping with
  exactly a moment state's field names counts as one.
  """
  if isinstance(node, tuple(_MOMENT_TYPES)):
    return _MOMENT_TYPES[type(node)]
  if isinstance(node, collections.abc.Mapping):
    return _MOMENT_FIELDS.get(frozenset(node.keys()))
  return None


def _is_inject(node) -> bool:
  """inject_hyperparams' state, as a NamedTuple or as nnx.split's mapping."""
  if isinstance(
    node, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState
  ):
    return True
  return isinstance(node, collections.abc.Mapping) and _INJECT_FIELDS <= set(node)


def _scalar(x):
  return jax.tree.leaves(x)[0]  # Unwraps nnx.OptArray / nnx.Variable.


def _betas_from_hyperparams(hyperparams) -> tuple[Any, Any] | None:
  """(beta1, beta2) for the Adam states under an inject_hyperparams state."""
  for keys in _BETA_KEYS:
    if all(key in hyperparams for key in keys):
      values = [_scalar(hyperparams[key]) for key in keys]
      return values[0], values[-1]
  return None


@dataclasses.dataclass(frozen=True)
class _Found:
  path: tuple[Any, ...]  # Key path of the moment state in the optimizer state.
  fields: dict[str, Any]
  second: str  # "nu", "rms" or "variance".
  hyperparam_betas: tuple[Any, Any] | None  # From the nearest inject state.

  @property
  def where(self) -> str:
    return jax.tree_util.keystr(self.path) or "the root"

  @property
  def labels(self) -> list[str]:
    """Dict keys on the way to the state (partition labels), nearest first."""
    keys = [k.key for k in self.path if isinstance(k, DictKey)]
    return [k for k in reversed(keys) if isinstance(k, str)]


def _find_moment_states(tree, prefix=(), betas=None) -> list[_Found]:
  """Every moment state in tree order, with the nearest inject_hyperparams' betas."""
  is_node = lambda x: _second_field(x) is not None or _is_inject(x)
  found = []
  for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_node)[0]:
    path = prefix + path
    fields = _fields(node)
    if fields is None:  # A leaf: neither a moment state nor inject_hyperparams.
      continue
    second = _second_field(node)
    if second is not None:
      found.append(_Found(path, fields, second, betas))
    elif _is_inject(node):
      key = GetAttrKey if isinstance(node, tuple) else DictKey
      inner_betas = _betas_from_hyperparams(fields["hyperparams"]) or betas
      found += _find_moment_states(
        fields["inner_state"], (*path, key("inner_state")), inner_betas
      )
  return found


def _is_empty(found: _Found) -> bool:
  """No array under the state's mean (e.g. Muon's Adam group with no leaves)."""
  return not jax.tree.leaves(
    found.fields["mu" if found.second != "variance" else "mean"]
  )


def _label_for(found: _Found, beta) -> str | None:
  """The nearest dict key on the state's path that the beta mapping names."""
  return next((label for label in found.labels if label in beta), None)


def _resolve_betas(found: _Found, beta) -> tuple[Any, Any] | None:
  if isinstance(beta, collections.abc.Mapping):
    label = _label_for(found, beta)
    return found.hyperparam_betas if label is None else _as_pair(beta[label])
  if beta is not None:
    return _as_pair(beta)
  return found.hyperparam_betas


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


def _as_pair(value) -> tuple[Any, Any]:
  return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _read(found: _Found, betas) -> GradientMoments:
  """Debiased (mean, real variance) of one moment state, in at least float32."""
  fields = found.fields
  if found.second == "variance":
    mean = _tree.upcast(fields["mean"])
    variance = jax.tree.map(jnp.real, _tree.upcast(fields["variance"]))
    return GradientMoments(mean, variance)
  # count 0 (no update yet): the moments are 0, and so are mean and variance.
  count = jnp.maximum(_scalar(fields["count"]), 1)
  second = fields[found.second]
  if found.second == "rms":
    second = jax.tree.map(lambda r: jnp.square(_tree.upcast(r)), second)
  return read_adam_moments(fields["mu"], second, count, *betas)


def _merge(parts: list[tuple[_Found, GradientMoments]]) -> GradientMoments:
  """One GradientMoments from several states over disjoint parts of one tree."""
  if len(parts) == 1:
    return parts[0][1]
  is_hole = lambda x: isinstance(x, optax.MaskedNode)
  flat = [jax.tree.flatten(m, is_leaf=is_hole) for _, m in parts]
  treedef = flat[0][1]
  if any(t != treedef for _, t in flat):
    raise ValueError(
      "moments_from_state found moment states over different trees at "
      + ", ".join(found.where for found, _ in parts)
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
        + " and ".join(parts[i][0].where for i in owners)
        + ": ambiguous. Pass the sub-state you want to moments_from_state."
      )
    merged.append(leaves[owners[0]] if owners else optax.MaskedNode())
  return jax.tree.unflatten(treedef, merged)


def moments_from_state(
  opt_state: optax.OptState,
  beta: float
  | tuple[float, float]
  | collections.abc.Mapping[str, float | tuple[float, float]]
  | None = None,
) -> GradientMoments | None:
  r"""The debiased gradient mean and variance held in an optimizer state.

  Walks any optax state tree (``chain``, ``inject_hyperparams``,
  ``apply_if_finite``, ``MultiSteps``, ``masked``, ``partition`` /
  ``multi_transform``), ``flax.nnx.Optimizer.opt_state`` and the pure state of
  ``nnx.split(optimizer)`` that a jitted train step carries, and reads every
  moment state it finds:

  * ``optax.ScaleByAdamState(count, mu, nu)`` (``optax.adam``,
    :func:`balanced_optax.balanced_adam`, :func:`balanced_optax.tied_moments`):
    with :math:`c_i = 1 - \beta_i^{\max(\text{count}, 1)}`,

    .. math::

      \text{mean} = \mu / c_1, \qquad
      \text{variance} = \max(\operatorname{Re}\nu / c_2 - |\text{mean}|^2,\ 0)

    (for complex params the mean is complex and the variance
    :math:`E|g - \text{mean}|^2` real);
  * ``ScaleSafeAdamState(count, mu, rms)`` (``scale_safe=True``): the same
    with :math:`\nu = \text{rms}^2`;
  * ``VarianceEmaState(count, mean, variance)``
    (:func:`balanced_optax.variance_ema`): its fields as they are (they are
    the debiased moments when ``debias=True``; no beta is needed).

  States that hold no coordinates (e.g. the empty Adam group inside
  ``optax.contrib.muon`` when every leaf it sees is a matrix) are skipped.
  Every other state is read with its own beta, and the results are merged
  into one :class:`GradientMoments` shaped like the params: under
  ``optax.partition`` or ``optax.masked`` each state covers some leaves and
  holds ``optax.MaskedNode`` holes elsewhere, so the merged tree has each
  covered leaf's moments and a ``MaskedNode`` (no coordinates) where no
  moment state covers the leaf (e.g. Muon's matrices).
  :func:`moment_statistics` then reports all covered coordinates together
  (``per_leaf=True`` names each leaf by its path in the params).

  States are recognised by their type, not by the optimizer that made them:
  ``optax.adamax`` and ``optax.yogi`` also keep an ``optax.ScaleByAdamState``,
  but their ``nu`` is not an EMA of :math:`g^2` (a running max, a
  sign-driven update), so their "variance" here means nothing. In a split
  nnx state the NamedTuple types are gone, so any mapping with exactly the
  fields ``{count, mu, nu}`` is read as Adam's (``optax.adabelief``'s state
  too). Before the first update (count 0) the moments are zero.
  For an untied Adam state (:math:`\beta_1 \ne \beta_2`) the "variance" mixes
  two memories and is only a rough estimate.

  Args:
    opt_state: an optimizer state; jit-traced states are fine.
    beta: the EMA memory to debias with, for the states that need one: a
      float (tied), a pair ``(beta1, beta2)``, or a mapping from partition
      labels to either, for several groups with different betas, e.g.
      ``{"embed": 0.99, "rest": 0.95}`` (a state takes the entry of the
      nearest enclosing dict key found in the mapping). Where ``beta`` gives
      none, the beta comes from the nearest enclosing
      ``optax.inject_hyperparams`` state: its ``'adam_beta'``, ``'adam_b1'``
      and ``'adam_b2'`` (Muon's Adam half), ``'beta'``, or ``'b1'`` and
      ``'b2'``, the first present.

  Returns:
    :class:`GradientMoments` (mean, variance) in at least float32, each a
    tree shaped like the params, or None if the state holds no moments with
    coordinates.

  Raises:
    ValueError: if ``beta`` (or an entry of it) is not a memory in [0, 1) or a
      pair of them, an Adam state is found but no beta is known for it, a
      label of a ``beta`` mapping is on no state's path, or the states found
      cannot be merged (they cover the same coordinates, or
      different trees); the message names the states' paths.

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
  found = [f for f in _find_moment_states(opt_state) if not _is_empty(f)]
  if isinstance(beta, collections.abc.Mapping):
    unused = set(beta) - {_label_for(f, beta) for f in found}
    if unused:
      raise ValueError(
        f"beta names labels {sorted(unused)} that are on no moment state's path;"
        " the states found are at "
        + (", ".join(f"{f.where} (dict keys {f.labels})" for f in found) or "none")
        + "."
      )
  if not found:
    return None
  parts, missing = [], []
  for state in found:
    betas = None if state.second == "variance" else _resolve_betas(state, beta)
    if betas is None and state.second != "variance":
      missing.append(state)
    else:
      parts.append((state, _read(state, betas)))
  if missing:
    raise ValueError(
      "moments_from_state found "
      + ", ".join(
        f"an Adam moment state at {s.where} (dict keys on its path: {s.labels})"
        for s in missing
      )
      + " but no beta to debias it with: pass beta=<float>, beta=(b1, b2), or"
      " beta={label: beta} for several groups, or build the optimizer with"
      " optax.inject_hyperparams so that 'beta' is in its hyperparams."
    )
  return _merge(parts)
