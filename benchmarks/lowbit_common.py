r"""The optimizers the low-bit benchmarks compare: one function, five stores.

:func:`optimizer` is balanced AdamW whose moments are stored as

  ============  ==========================================================
  ``float32``   :func:`balanced_optax.balanced_adamw` (8 bytes per param)
  ``bfloat16``  the same with ``state_dtype="bfloat16"`` (4)
  ``int8``      the same with ``state_dtype="int8"`` (2.05)
  ``int4``      the same with ``state_dtype="int4"`` (1.05)
  ``bnb``       a bitsandbytes-style 8-bit reference (2.02), built here:
                :func:`scale_by_bnb_adam`
  ============  ==========================================================

(``balanced_adam`` without weight decay), the reference chained with the
same decoupled weight decay and learning rate, so that the stores differ only
in how the moments are kept. ``min_size`` is the
low-bit stores' size threshold: leaves with fewer elements keep float32
moments (4096 by default, as bitsandbytes and torchao; the tiny models of
:mod:`benchmarks.workloads` need it lowered to be quantized at all).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo
from benchmarks import lowbit_codes

STORES = ("float32", "bfloat16", "int8", "int4", "bnb")
# bitsandbytes' block (256 since its v0.44; 2048 before) and its threshold.
BNB_BLOCK = 256
MIN_SIZE = 4096
# Dynamic-exponent 8-bit maps: 255 signed levels for m, 256 unsigned for v.
_SIGNED = np.asarray(lowbit_codes.dynamic_levels(8, True), np.float32)
_UNSIGNED = np.asarray(lowbit_codes.dynamic_levels(8, False), np.float32)


def optimizer(
  store: str,
  learning_rate: optax.ScalarOrSchedule,
  beta: jax.typing.ArrayLike = 0.95,
  *,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  min_size: int = MIN_SIZE,
) -> optax.GradientTransformation:
  """Balanced AdamW with its moments kept as ``store`` (one of :data:`STORES`).

  A ``weight_decay`` of (Python) 0 leaves the decay out: balanced Adam.
  """
  decay = not (isinstance(weight_decay, int | float) and weight_decay == 0)
  if store in ("float32", "bfloat16", "int8", "int4"):
    state_dtype = None if store == "float32" else store
    low_bit = {"min_size": min_size} if store in ("int8", "int4") else {}
    if not decay:
      return bo.balanced_adam(learning_rate, beta, state_dtype=state_dtype, **low_bit)
    return bo.balanced_adamw(
      learning_rate,
      beta,
      weight_decay=weight_decay,
      state_dtype=state_dtype,
      **low_bit,
    )
  if store != "bnb":
    raise ValueError(f"store must be one of {STORES}, got {store!r}.")
  return optax.chain(
    scale_by_bnb_adam(beta, min_size=min_size),
    optax.add_decayed_weights(weight_decay) if decay else optax.identity(),
    optax.scale_by_learning_rate(learning_rate),
  )


# ---- The bitsandbytes-style reference.


class BnbAdamState(NamedTuple):
  """State of :func:`scale_by_bnb_adam`: trees like the params, ``MaskedNode``
  where a leaf keeps the other kind.

  Attributes:
    count: updates taken.
    m_codes, v_codes: uint8 indices into the signed (m) and unsigned (v) maps,
      blocks of :data:`BNB_BLOCK` along the flattened leaf (zero-padded).
    m_absmax, v_absmax: float32 per block.
    mu, nu: float32 moments of the leaves under ``min_size``.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name
  m_codes: Any
  m_absmax: Any
  v_codes: Any
  v_absmax: Any
  mu: Any
  nu: Any


def _blocks(x: jax.Array) -> jax.Array:
  flat = x.reshape(-1).astype(jnp.float32)
  return jnp.pad(flat, (0, -flat.size % BNB_BLOCK)).reshape(-1, BNB_BLOCK)


def _quantize(x: jax.Array, levels: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """Blocks of float32 -> (uint8 nearest-level codes, float32 absmax)."""
  absmax = jnp.max(jnp.abs(x), axis=-1)
  scaled = x / jnp.where(absmax > 0, absmax, 1)[:, None]
  midpoints = jnp.asarray((levels[1:] + levels[:-1]) / 2)
  return jnp.searchsorted(midpoints, scaled).astype(jnp.uint8), absmax


def _dequantize(codes, absmax, levels: np.ndarray) -> jax.Array:
  return jnp.asarray(levels)[codes.astype(jnp.int32)] * absmax[:, None]


def scale_by_bnb_adam(
  beta: jax.typing.ArrayLike = 0.95,
  eps: float = 1e-8,
  *,
  min_size: int = MIN_SIZE,
) -> optax.GradientTransformation:
  r"""Balanced Adam with bitsandbytes-style 8-bit moments (a reference).

  Each of :math:`m` and :math:`v` is kept as uint8 indices into a
  dynamic-exponent map (signed for :math:`m`, unsigned for :math:`v`; built
  in :func:`benchmarks.lowbit_codes.dynamic_levels`), one float32 absmax per
  block of :data:`BNB_BLOCK`. A step dequantizes, updates both moments in
  float32, computes :math:`\hat m / (\sqrt{\hat v} + \varepsilon)` from the
  fresh moments, then requantizes them to the nearest level under the new
  absmax (Dettmers et al. 2022, arXiv 2110.02861). Leaves under ``min_size``
  elements keep float32 moments.
  """
  masked = optax.MaskedNode()

  def quantized(p) -> bool:
    return p.size >= min_size and p.size > 0

  def init_fn(params):
    def per_leaf(p):
      if not quantized(p):
        zeros = jnp.zeros(p.shape, jnp.float32)
        return (masked,) * 4 + (zeros, zeros)
      blocks = -(-p.size // BNB_BLOCK)
      zero_m = int(np.searchsorted((_SIGNED[1:] + _SIGNED[:-1]) / 2, 0.0))
      return (
        jnp.full((blocks, BNB_BLOCK), zero_m, jnp.uint8),
        jnp.zeros(blocks, jnp.float32),
        jnp.zeros((blocks, BNB_BLOCK), jnp.uint8),
        jnp.zeros(blocks, jnp.float32),
        masked,
        masked,
      )

    leaves, treedef = jax.tree.flatten(params)
    fields = zip(*(per_leaf(p) for p in leaves), strict=True)
    return BnbAdamState(
      jnp.zeros([], jnp.int32), *(jax.tree.unflatten(treedef, f) for f in fields)
    )

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    c = 1 - beta**count
    leaves, treedef = jax.tree.flatten(updates)
    fields = [treedef.flatten_up_to(f) for f in state[1:]]
    outs, new = [], []
    for g, m_codes, m_max, v_codes, v_max, mu, nu in zip(leaves, *fields, strict=True):
      if isinstance(mu, optax.MaskedNode):
        m = _dequantize(m_codes, m_max, _SIGNED)
        v = _dequantize(v_codes, v_max, _UNSIGNED)
        blocks = _blocks(g)
      else:
        m, v, blocks = mu, nu, g.astype(jnp.float32)
      m = beta * m + (1 - beta) * blocks
      v = beta * v + (1 - beta) * blocks * blocks
      u = (m / c) / (jnp.sqrt(v / c) + eps)
      if isinstance(mu, optax.MaskedNode):
        u = u.reshape(-1)[: g.size].reshape(g.shape)
        new.append((*_quantize(m, _SIGNED), *_quantize(v, _UNSIGNED), mu, nu))
      else:
        new.append((m_codes, m_max, v_codes, v_max, m, v))
      outs.append(u.astype(g.dtype))
    trees = (jax.tree.unflatten(treedef, list(f)) for f in zip(*new, strict=True))
    return jax.tree.unflatten(treedef, outs), BnbAdamState(count, *trees)

  return optax.GradientTransformation(init_fn, update_fn)
