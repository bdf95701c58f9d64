r"""Muon on the hidden matrices, balanced Adam on the rest.

Muon (Jordan et al., 2024; cited in :func:`balanced_muon`) orthogonalises
each matrix's momentum, so it is defined for the hidden weight matrices only;
embeddings, heads, norms and biases are trained by Adam. :func:`balanced_muon`
keeps optax's Muon untouched and puts balanced Adam (one memory,
:math:`\beta_1 = \beta_2`) in the Adam role.
"""

from collections.abc import Callable
from typing import Any

import jax
import optax
from optax.contrib import MuonDimensionNumbers

from balanced_optax import _checks
from balanced_optax.alias import balanced_adamw

_MUON, _ADAM = "muon", "adam"


def _is_dimension_spec(x) -> bool:
  return x is None or isinstance(x, MuonDimensionNumbers)


def _labels(weight_dimension_numbers) -> Callable[[optax.Params], Any]:
  """Labels 'muon' / 'adam' per leaf, by optax.contrib.muon's own rule."""

  def labels(params):
    if weight_dimension_numbers is None:
      return jax.tree.map(lambda x: _MUON if x.ndim == 2 else _ADAM, params)
    specs = weight_dimension_numbers
    if callable(specs):
      specs = specs(params)
    # A spec may stand for a whole subtree (a prefix of the params).
    return jax.tree.map(
      lambda spec, sub: jax.tree.map(lambda _: _ADAM if spec is None else _MUON, sub),
      specs,
      params,
      is_leaf=_is_dimension_spec,
    )

  return labels


def balanced_muon(
  learning_rate: optax.ScalarOrSchedule,
  beta: jax.typing.ArrayLike = 0.95,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 0.0,
  weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
  mu_dtype: jax.typing.DTypeLike | None = None,
  *,
  ns_coeffs: Any = None,
  ns_steps: int = 5,
  nesterov: bool = True,
  adaptive: bool = False,
  preconditioning: str = "frobenius",
  muon_weight_dimension_numbers: Any = None,
  consistent_rms: jax.typing.ArrayLike | None = None,
  adam_beta: jax.typing.ArrayLike | None = None,
  adam_eps_root: jax.typing.ArrayLike = 0.0,
  adam_weight_decay: optax.ScalarOrSchedule = 0.0,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  state_dtype: jax.typing.DTypeLike | str | None = None,
  scale_safe: bool = False,
  guard_nonfinite: bool = True,
  stochastic_rounding: bool = True,
  min_size: int | None = None,
  full_precision_mask: Any = None,
) -> optax.GradientTransformation:
  r"""Muon on the hidden matrices and balanced Adam on every other leaf.

  Leaves are labelled by ``optax.contrib.muon``'s rule (by default 2-D leaves
  are Muon's; with ``muon_weight_dimension_numbers``, those whose spec is a
  ``MuonDimensionNumbers``), then, as ``optax.partition``:

  * Muon leaves get ``optax.contrib.muon(learning_rate, beta=beta, ...)``:
    momentum :math:`\mu_k = \beta\mu_{k-1} + (1-\beta)g_k`, orthogonalised by
    Newton-Schulz, exactly as optax computes it;
  * Adam leaves get :func:`balanced_adamw` with
    :math:`\beta_1 = \beta_2` = ``adam_beta`` (default ``beta``), ``eps``,
    ``nesterov`` and the ``adam_*`` and balanced-Adam options.

  The updates equal ``optax.contrib.muon(..., adam_b1=b, adam_b2=b)`` with
  ``b = adam_beta``, except where balanced Adam's options differ from
  ``optax.adamw`` (see :ref:`muon-differences`). To keep embeddings and heads
  on Adam, pass ``muon_weight_dimension_numbers`` as a function of the params
  that returns ``None`` for them, as in the example.

  Args:
    learning_rate: Muon's learning rate, a constant >= 0 or a schedule.
    beta: Muon's momentum, in [0, 1); also the Adam memory unless
      ``adam_beta`` is given.
    eps: Newton-Schulz's and Adam's eps, >= 0.
    weight_decay: weight decay of the Muon leaves, >= 0 (multiplied by the
      learning rate, as in optax).
    weight_decay_mask: optax.contrib.muon's mask of the Muon leaves to decay.
    mu_dtype: dtype of Muon's momentum (None: the params').
    ns_coeffs: Newton-Schulz coefficients or a preset name (None: optax's
      default).
    ns_steps: Newton-Schulz iterations, >= 1.
    nesterov: Nesterov momentum, for Muon and for Adam (as optax does).
    adaptive: optax.contrib.muon's dual-norm scaling.
    preconditioning: optax.contrib.muon's preconditioning before Newton-Schulz.
    muon_weight_dimension_numbers: a tree (or a function of the params that
      returns one) of ``optax.contrib.MuonDimensionNumbers`` for Muon leaves
      and ``None`` for Adam leaves; None: 2-D leaves are Muon's.
    consistent_rms: optax.contrib.muon's consistent-RMS scaling.
    adam_beta: the one memory of balanced Adam's moments, in [0, 1); None
      uses ``beta``.
    adam_eps_root: Adam's eps inside the square root, >= 0.
    adam_weight_decay: decoupled weight decay of the Adam leaves, >= 0.
    adam_learning_rate: Adam's learning rate, a constant >= 0 or a schedule
      (None: ``learning_rate``).
    state_dtype: dtype of balanced Adam's moments (None: the params'), or
      ``"int8"`` / ``"int4"`` for low-bit Adam state (see :doc:`lowbit`).
    scale_safe: balanced Adam's root-form second moment.
    guard_nonfinite: balanced Adam's non-finite guard.
    stochastic_rounding: stochastic rounding of bfloat16 Adam moments.
    min_size: low-bit Adam state: leaves with fewer elements keep float32
      moments (None: 4096).
    full_precision_mask: low-bit Adam state: a tree of bools like the params
      (or a function of the params returning one), True where an Adam leaf
      keeps float32 moments.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    Hidden matrices on Muon; the embedding, the bias and the norm's scale on
    balanced Adam:

    >>> import jax, jax.numpy as jnp, optax
    >>> import balanced_optax as bo
    >>> params = {
    ...   "embed": jnp.ones((10, 4)),
    ...   "hidden": jnp.ones((4, 4)),
    ...   "bias": jnp.ones(4),
    ...   "norm": jnp.ones(4),
    ... }
    >>> def dims(params):
    ...   spec = lambda path, x: (
    ...     optax.contrib.MuonDimensionNumbers()
    ...     if x.ndim == 2 and path[0].key != "embed"
    ...     else None
    ...   )
    ...   return jax.tree_util.tree_map_with_path(spec, params)
    >>> tx = bo.balanced_muon(0.02, beta=0.95, muon_weight_dimension_numbers=dims)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> print(f"{updates['embed'][0, 0]:.4f} {updates['bias'][0]:.4f}")
    -0.0297 -0.0297
    >>> moments = bo.moments_from_state(state, beta=0.95)
    >>> print(
    ...   sorted(
    ...     jax.tree_util.keystr(p)
    ...     for p, _ in jax.tree_util.tree_leaves_with_path(moments.mean)
    ...   )
    ... )
    ["['bias']", "['embed']", "['norm']"]

  References:
    Jordan et al., `Muon: An optimizer for hidden layers in neural networks
    <https://kellerjordan.github.io/posts/muon/>`_, 2024.

    Liu et al., `Muon is Scalable for LLM Training
    <https://arxiv.org/abs/2502.16982>`_, 2025.

    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2
    <https://arxiv.org/abs/2601.21739>`_, 2026.
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_beta("beta", beta)
  if adam_beta is not None:
    _checks.check_beta("adam_beta", adam_beta)
  _checks.check_interval("eps", eps, 0.0)
  _checks.check_interval("weight_decay", weight_decay, 0.0)
  if not isinstance(ns_steps, jax.core.Tracer):
    _checks.integer("ns_steps", ns_steps, 1)
  mu_dtype = _checks.float_dtype_or_none("mu_dtype", mu_dtype)
  # The Adam half's arguments, checked here so that errors name them as
  # balanced_muon's (balanced_adamw would call them weight_decay, ...).
  _checks.check_interval("adam_eps_root", adam_eps_root, 0.0)
  for name, value in (
    ("adam_weight_decay", adam_weight_decay),
    ("adam_learning_rate", adam_learning_rate),
  ):
    if value is not None and not callable(value):
      _checks.check_interval(name, value, 0.0)
  muon_options = {} if ns_coeffs is None else {"ns_coeffs": ns_coeffs}
  muon = optax.contrib.muon(
    learning_rate,
    ns_steps=ns_steps,
    beta=beta,
    eps=eps,
    weight_decay=weight_decay,
    weight_decay_mask=weight_decay_mask,
    mu_dtype=mu_dtype,
    nesterov=nesterov,
    adaptive=adaptive,
    preconditioning=preconditioning,
    # optax's Muon sees only the Muon leaves (the rest are MaskedNode holes),
    # so its own Adam group is empty.
    muon_weight_dimension_numbers=muon_weight_dimension_numbers,
    consistent_rms=consistent_rms,
    **muon_options,
  )
  adam = balanced_adamw(
    learning_rate if adam_learning_rate is None else adam_learning_rate,
    beta=beta if adam_beta is None else adam_beta,
    eps=eps,
    weight_decay=adam_weight_decay,
    eps_root=adam_eps_root,
    nesterov=nesterov,
    state_dtype=state_dtype,
    scale_safe=scale_safe,
    guard_nonfinite=guard_nonfinite,
    stochastic_rounding=stochastic_rounding,
    min_size=min_size,
    full_precision_mask=full_precision_mask,
  )
  return optax.partition(
    {_MUON: muon, _ADAM: adam}, _labels(muon_weight_dimension_numbers)
  )
