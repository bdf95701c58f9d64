r"""Gradient-scale invariance: the closed form and two measurements [FH26].

Adam with :math:`\varepsilon = 0` is invariant to a constant rescaling of the
gradient, :math:`u(c\,g) = u(g)`, for any betas. Under a drifting scale
:math:`c_t = e^{\delta t}` and a stationary gradient its update moves to first
order in :math:`\delta`,

.. math::

  \frac{u_t(c\,g)}{u_t(g)} = 1 + k\,\delta + O(\delta^2), \qquad
  k = \frac{\beta_2}{1-\beta_2} - \frac{\beta_1}{1-\beta_1},

and :math:`k = 0` exactly on the diagonal :math:`\beta_1 = \beta_2`.
:func:`first_order_scale_coefficient` is :math:`k`; :func:`scale_sensitivity`
and :func:`update_norm_stability` measure the response of any optax
transformation. The derivation is in :doc:`research_tools`.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from balanced_optax import _checks


def first_order_scale_coefficient(beta1, beta2) -> float | np.ndarray:
  r"""The first-order coefficient :math:`k` of Adam's response to a scale drift.

  .. math::

    k = \frac{\beta_2}{1-\beta_2} - \frac{\beta_1}{1-\beta_1}, \qquad
    \frac{u_t(c\,g)}{u_t(g)} = 1 + k\,\delta + O(\delta^2)

  for :math:`c_t = e^{\delta t}` and a stationary gradient, once the EMAs
  have forgotten their start. :math:`k > 0` (the usual
  :math:`\beta_1 < \beta_2`) means a growing gradient scale inflates the
  update; :math:`k = 0` iff :math:`\beta_1 = \beta_2`, where the response is
  second order (see :doc:`research_tools`).

  Args:
    beta1: first-moment memory in [0, 1), a float or an array.
    beta2: second-moment memory in [0, 1), a float or an array.

  Returns:
    :math:`k` (broadcast over the inputs), a float or an array.

  Example:
    >>> import balanced_optax as bo
    >>> print(round(bo.first_order_scale_coefficient(0.9, 0.999), 6))
    990.0
    >>> print(bo.first_order_scale_coefficient(0.95, 0.95))
    0.0

  References:
    [FH26] Fernandez-Hernandez et al., Why Adam Works Better with
    beta1 = beta2: The Missing Gradient Scale Invariance Principle,
    arXiv 2601.21739, 2026.
  """
  b1 = _checks.unit_interval("beta1", beta1)
  b2 = _checks.unit_interval("beta2", beta2)
  # a2 - a1, not -(a1 - a2), which gives -0.0 on the diagonal.
  return _checks.float_or_array(b2 / (1 - b2) - b1 / (1 - b1))


def _stack_steps(grads: Any, scales: Any) -> tuple[Any, jax.Array]:
  """(gradients with a leading time axis T, scales of shape [T]), validated."""
  scales_T = _checks.real_array("scales", scales, "positive numbers")
  scales_T = scales_T.astype(np.float64)
  if scales_T.ndim != 1 or len(scales_T) == 0:
    raise ValueError(f"scales must be a non-empty 1-D array, got {scales_T.shape}.")
  if not np.all(np.isfinite(scales_T) & (scales_T > 0)):
    raise ValueError("scales must be finite and > 0.")
  if isinstance(grads, list):  # A list holds one gradient pytree per step.
    if not grads:
      raise ValueError("grads is an empty list.")
    grads = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
  leaves = jax.tree.leaves(grads)
  if not leaves or any(
    jnp.ndim(x) == 0 or jnp.shape(x)[0] != len(scales_T) for x in leaves
  ):
    raise ValueError(
      f"grads must be a list of {len(scales_T)} gradient pytrees or a pytree"
      f" whose leaves all have a leading time axis of length {len(scales_T)}"
      " (= len(scales))."
    )
  return grads, jnp.asarray(scales_T)


def _norm(tree: Any) -> jax.Array:
  """Global L2 norm, accumulated in at least float32."""
  squares = [
    jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))))
    for x in jax.tree.leaves(tree)
  ]
  return jnp.sqrt(sum(squares))


def _run(tx, grads_T, scales_T, params, *, with_reference: bool):
  """Scans tx over c_t g_t (and g_t): per step ||u(cg)|| and ||u(cg) - u(g)||."""
  if params is None:
    params = jax.tree.map(lambda g: jnp.zeros_like(g[0]), grads_T)

  @jax.jit
  def scan(grads_T, scales_T, params):
    def step(states, inputs):
      state_scaled, state_ref = states
      g, c = inputs
      cg = jax.tree.map(lambda x: (c * x).astype(x.dtype), g)
      u_scaled, state_scaled = tx.update(cg, state_scaled, params)
      norms = {"scaled": _norm(u_scaled)}
      if with_reference:
        u_ref, state_ref = tx.update(g, state_ref, params)
        norms["ref"] = _norm(u_ref)
        norms["diff"] = _norm(jax.tree.map(jnp.subtract, u_scaled, u_ref))
      return (state_scaled, state_ref), norms

    state = tx.init(params)
    _, norms = jax.lax.scan(step, (state, state), (grads_T, scales_T))
    return norms

  return jax.tree.map(np.asarray, scan(grads_T, scales_T, params))


def scale_sensitivity(
  tx: optax.GradientTransformation,
  grads: Any,
  scales: Sequence[float] | np.ndarray,
  params: optax.Params | None = None,
) -> np.ndarray:
  r"""Per-step relative change of the update when the gradients are rescaled.

  Runs two fresh copies of ``tx``, one on :math:`g_t` and one on
  :math:`c_t g_t`, and returns (with global L2 norms over the pytree)

  .. math::

    d_t = \frac{\|u_t(c\,g) - u_t(g)\|_2}{\|u_t(g)\|_2}.

  For Adam with :math:`\varepsilon = 0` a constant :math:`c` gives
  :math:`d_t = 0` and a drift :math:`c_t = e^{\delta t}` gives
  :math:`d_t \to |k\,\delta|`, :math:`k` =
  :func:`first_order_scale_coefficient`. Steps where :math:`u_t(g) = 0` give
  ``nan`` or ``inf``.

  Args:
    tx: any ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-3)``).
    grads: the gradient sequence, either a Python ``list`` of T gradient
      pytrees (one per step), or a single pytree whose leaves all carry a
      leading time axis of length T. Any other container (tuple, dict, array)
      is read as the stacked form. All T steps are held in memory at once.
    scales: the scale :math:`c_t > 0` of each step, a 1-D array of length T.
    params: params passed to ``tx.init`` and ``tx.update``, held fixed so that
      both copies see the same problem; default zeros shaped like one step's
      gradient.

  Returns:
    A NumPy array of shape [T] with :math:`d_t`.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> import balanced_optax as bo
    >>> g_TxD = jnp.tile(jnp.array([1.0, -2.0, 0.5]), (600, 1))  # stationary
    >>> c_T = np.exp(1e-4 * np.arange(600))  # slow drift, delta = 1e-4
    >>> untied = bo.scale_sensitivity(optax.adam(1.0, 0.9, 0.99, eps=0), g_TxD, c_T)
    >>> tied = bo.scale_sensitivity(optax.adam(1.0, 0.9, 0.9, eps=0), g_TxD, c_T)
    >>> k = bo.first_order_scale_coefficient(0.9, 0.99)
    >>> print(f"k delta = {k * 1e-4:.4f}, untied: {untied[-1]:.4f}", tied[-1] < 1e-5)
    k delta = 0.0090, untied: 0.0088 True

  References:
    [FH26] Fernandez-Hernandez et al., Why Adam Works Better with
    beta1 = beta2: The Missing Gradient Scale Invariance Principle,
    arXiv 2601.21739, 2026.
  """
  grads_T, scales_T = _stack_steps(grads, scales)
  norms = _run(tx, grads_T, scales_T, params, with_reference=True)
  return norms["diff"] / norms["ref"]


def update_norm_stability(
  tx: optax.GradientTransformation,
  grads: Any,
  scales: Sequence[float] | np.ndarray,
  params: optax.Params | None = None,
  *,
  warmup: int = 0,
) -> tuple[np.ndarray, float]:
  r"""Update norms under a gradient-rescaling pattern, and how much they oscillate.

  Runs a fresh copy of ``tx`` on :math:`c_t g_t` and returns the norms
  :math:`n_t = \|u_t(c\,g)\|_2` and their oscillation after ``warmup`` =
  :math:`w` steps, the mean absolute log-ratio of consecutive norms:

  .. math::

    \mathrm{osc} = \frac{1}{T - w - 1} \sum_{t=w}^{T-2}
      \Bigl|\ln \frac{n_{t+1}}{n_t}\Bigr|.

  It is 0 for a constant norm (zero included; a step from or to a zero norm
  counts :math:`\infty`) and scale-free. Compare transformations on the same
  gradients to isolate the optimizer's response (see :doc:`research_tools`).

  Args:
    tx: any ``optax.GradientTransformation``.
    grads: a ``list`` of T gradient pytrees or a pytree with a leading time
      axis of length T (as in :func:`scale_sensitivity`).
    scales: the rescaling pattern :math:`c_t > 0`, a 1-D array of length T.
    params: params for ``tx.init`` / ``tx.update``, held fixed; default zeros.
    warmup: number of initial steps left out of the oscillation (the norms
      are all returned), 0 <= warmup <= T - 2.

  Returns:
    ``(norms, oscillation)``: a NumPy array of shape [T] and a float.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> import balanced_optax as bo
    >>> g_TxD = jnp.ones((400, 3))  # a fixed gradient, rescaled by c_t
    >>> c_T = np.exp(0.5 * np.sin(2 * np.pi * np.arange(400) / 100))
    >>> for b2 in (0.9, 0.999):
    ...   tx = optax.adam(1.0, b1=0.9, b2=b2, eps=0)
    ...   _, osc = bo.update_norm_stability(tx, g_TxD, c_T, warmup=100)
    ...   print(b2, f"{osc:.1e}")
    0.9 8.8e-04
    0.999 1.6e-02

  References:
    [FH26] Fernandez-Hernandez et al., Why Adam Works Better with
    beta1 = beta2: The Missing Gradient Scale Invariance Principle,
    arXiv 2601.21739, 2026.
  """
  grads_T, scales_T = _stack_steps(grads, scales)
  if (
    isinstance(warmup, bool)
    or not isinstance(warmup, int | np.integer)
    or not 0 <= warmup <= len(scales_T) - 2
  ):
    raise ValueError(
      f"warmup must be an integer in [0, T - 2] = [0, {len(scales_T) - 2}],"
      f" got {warmup!r}."
    )
  norms = _run(tx, grads_T, scales_T, params, with_reference=False)["scaled"]
  n = norms[warmup:].astype(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    log_ratios = np.abs(np.diff(np.log(n)))
  # Equal norms (zero ones too, where log gives -inf - -inf) do not oscillate.
  log_ratios = np.where(n[1:] == n[:-1], 0.0, log_ratios)
  return norms, float(np.mean(log_ratios))
