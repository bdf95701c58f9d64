r"""Balanced Adam with 8-bit and 4-bit state (see :doc:`lowbit`).

With tied memories and zero initial moments, Cauchy-Schwarz bounds the ratio
:math:`r = m / \sqrt{v}` to :math:`[-1, 1]`, so a large leaf's state is kept as
``r`` and :math:`\sqrt{v}` in one integer word per element: ``r`` on a code
dense near zero with a per-block scale, :math:`\sqrt{v}` on a log code under
the block's maximum. Each step decodes, updates in float32, computes the
update from the fresh moments, then encodes with unbiased stochastic rounding
whose bits hash the step count and the value (no key in the state, the same
bits under any sharding).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from balanced_optax import _checks, _rounding, _tree

# Elements per block along the last axis. Shards whose length along the last
# axis is a multiple of it hold whole blocks.
BLOCK_SIZE = 64
# The words' layout: bump it whenever the codes, fields or blocks change, so
# that an old checkpoint is refused rather than misread.
LAYOUT_VERSION = 1


class _Format(NamedTuple):
  word: Any  # the unsigned integer dtype of one element's word
  ratio_bits: int  # high bits of the word: r on a quadratic code
  root_bits: int  # low bits: sqrt(v) on a log code, 0 meaning zero
  root_quarters: int  # quarter-octaves of v between adjacent levels


# Measured in benchmarks/lowbit_codes.py (docs/lowbit.md): the ratio needs far
# more bits than sqrt(v), whose rounding noise barely reaches the update.
# sqrt(v)'s levels are 2^(-1/8) apart for int8 (63 levels: 7.75 octaves) and
# 2^(-2) for int4 (3 levels: 4 octaves).
_FORMATS = {
  "int8": _Format(jnp.uint16, ratio_bits=10, root_bits=6, root_quarters=1),
  "int4": _Format(jnp.uint8, ratio_bits=6, root_bits=2, root_quarters=16),
}
# The state_dtype names, and the default least size of a low-bit leaf (as
# bitsandbytes and torchao: smaller tensors' state costs little in float32).
STATE_DTYPES = _checks.LOW_BIT_STATE_DTYPES
MIN_SIZE = 4096
# Scales are powers of 2^(1/8): the ratio's byte covers [2^-32, 1] in 9% steps.
_SCALE_STEPS = 8


class LowBitAdamState(NamedTuple):
  """State of balanced Adam with a low-bit ``state_dtype`` (``"int8"``, ``"int4"``).

  Each tree has the params' structure; a leaf holds arrays where its moments
  are stored that way and ``optax.MaskedNode()`` where they are not.

  Attributes:
    count: number of updates taken (int32 scalar).
    codes: one word per element (uint16 for int8, uint8 for int4): the ratio's
      code in the high bits, sqrt(v)'s in the low bits.
    ratio_scale: uint8 s per block: the ratio's scale is 2^(-s/8).
    root_scale: int16 e per block: sqrt(v)'s scale is 2^(e/8) (-2^15: zero).
    mu: float32 first moment of the leaves kept in full precision.
    nu: float32 second moment of those leaves.
    layout: int32 ``[LAYOUT_VERSION, word bits, BLOCK_SIZE]``.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  codes: optax.Updates
  ratio_scale: optax.Updates
  root_scale: optax.Updates
  mu: optax.Updates
  nu: optax.Updates
  layout: jax.Array


def _layout(fmt: _Format) -> jax.Array:
  bits = 8 * jnp.dtype(fmt.word).itemsize
  return jnp.array([LAYOUT_VERSION, bits, BLOCK_SIZE], jnp.int32)


# ---- Blocks: runs of BLOCK_SIZE along the last axis, or, where the last axis
# is shorter, whole last-axis rows stacked along the axis before it.


def block_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """Extent of a block along the last two axes (rows, columns) of ``shape``."""
  cols = shape[-1]
  if cols >= BLOCK_SIZE or len(shape) == 1:
    return 1, BLOCK_SIZE
  # A power of two, so that shards of the second-to-last axis stay aligned.
  rows = 1 << int(np.ceil(np.log2(BLOCK_SIZE / max(cols, 1))))
  return min(rows, shape[-2]), cols


def scale_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Shape of a leaf's per-block scales: the leaf's rank, blocks counted."""
  rows, cols = block_shape(shape)
  if len(shape) == 1:
    return (-(-shape[0] // cols),)
  return (*shape[:-2], -(-shape[-2] // rows), -(-shape[-1] // cols))


def _blocked(x: jax.Array, fill=0) -> jax.Array:
  """``x`` padded with ``fill`` and viewed as (*lead, rows of blocks, rows,
  blocks per row, columns): a block is ``[..., i, :, j, :]``."""
  rows, cols = block_shape(x.shape)
  y = x[None] if x.ndim == 1 else x
  *lead, a, b = y.shape
  pad_a, pad_b = -a % rows, -b % cols
  if pad_a or pad_b:
    y = jnp.pad(
      y, [(0, 0)] * len(lead) + [(0, pad_a), (0, pad_b)], constant_values=fill
    )
  return y.reshape(*lead, (a + pad_a) // rows, rows, (b + pad_b) // cols, cols)


def _unblocked(y: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  *lead, na, rows, nb, cols = y.shape
  y = y.reshape(*lead, na * rows, nb * cols)
  a, b = (1, *shape)[-2:]
  if (a, b) != (na * rows, nb * cols):
    y = y[..., :a, :b]
  return y.reshape(shape)


def _block_max(y: jax.Array) -> jax.Array:
  """Each block's largest element, kept broadcastable against the blocks."""
  return jnp.max(y, axis=(-3, -1), keepdims=True)


# ---- Codes.


def _uniforms(x: jax.Array, seed: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two uniforms in [0, 1) (16 bits each) from a hash of float32 ``x`` and ``seed``."""
  bits = _rounding.mix(lax.bitcast_convert_type(x, jnp.uint32) ^ seed)
  scale = jnp.float32(2.0**-16)
  return (bits >> 16).astype(jnp.float32) * scale, (bits & 0xFFFF).astype(
    jnp.float32
  ) * scale


# The float32 mantissa bits of 2^(i/8) (i = 0..7) and of 2^(i/4) - 1 for
# i = 1, 2, 3.
_EIGHTH_MANTISSAS = tuple(
  int(np.float32(2.0 ** (i / 8)).view(np.int32)) & 0x7FFFFF for i in range(8)
)
_QUARTER_MANTISSAS = tuple(int((2.0 ** (i / 4) - 1) * 2**23) for i in (1, 2, 3))


def _pow2_eighths(n: jax.Array) -> jax.Array:
  """2^(n/8) in float32 for integers -1008 <= n <= 0, from bits alone.

  The exponent field is n's octave, the mantissa float32(2^((n mod 8)/8))'s,
  picked by a tree of selects on n's low three bits.
  """
  low = n & 7
  pick = [jnp.int32(t) for t in _EIGHTH_MANTISSAS]
  for bit in (1, 2, 4):
    on = (low & bit) != 0
    pick = [jnp.where(on, b, a) for a, b in zip(pick[::2], pick[1::2], strict=True)]
  return lax.bitcast_convert_type((((n >> 3) + 127) << 23) | pick[0], jnp.float32)


def _log2_quarters(y: jax.Array) -> jax.Array:
  """floor(4 log2 y) for float32 y > 0 (subnormals read as 2^-127)."""
  bits = lax.bitcast_convert_type(y, jnp.int32)
  mantissa = bits & 0x7FFFFF
  quarter = sum((mantissa >= m).astype(jnp.int32) for m in _QUARTER_MANTISSAS)
  return 4 * ((bits >> 23) - 127) + quarter


def _encode_ratio(x, u, bits):
  """Field of x = r/scale in [-1, 1] on the code sign(k) (k/K)^2, unbiased."""
  k_max = 2 ** (bits - 1) - 1
  t = k_max * jnp.sqrt(jnp.minimum(jnp.abs(x), 1))
  k = jnp.floor(t)
  # Levels k^2 and (k+1)^2 (in units of 1/K^2): up with probability
  # (t^2 - k^2) / (2k + 1) keeps E[level] = t^2, i.e. unbiased in r.
  k = jnp.minimum(k + (u * (2 * k + 1) < t * t - k * k), k_max).astype(jnp.int32)
  return jnp.where(x < 0, -k, k) + k_max


def _decode_ratio(field, bits):
  k_max = 2 ** (bits - 1) - 1
  k = (field - k_max).astype(jnp.float32)
  return k * jnp.abs(k) * (1 / (k_max * k_max))


def _encode_root(y2, u, bits, quarters):
  """Code of y2 = v/scale^2 in [0, 1] on 0 and 2^(-j quarters/4), unbiased in v."""
  top = 2**bits - 1
  # Below the lowest level a root rounds up to it, not down to 0: a zero
  # sqrt(v) would reset the coordinate's memory (docs/lowbit.md).
  k = _log2_quarters(y2)
  # For a power of two a shift floors the division (// costs XLA a sign
  # fix-up per element, even by 1).
  if quarters & (quarters - 1) == 0:
    k = k >> (quarters.bit_length() - 1)
  else:
    k = k // quarters
  k = jnp.clip(k, 1 - top, 0)
  low = _pow2_eighths(2 * k * quarters)
  up = (k < 0) & (u * (low * (2 ** (quarters / 4) - 1)) < y2 - low)
  return jnp.where(y2 > 0, k + top + up, 0)


def _decode_root(code, bits, quarters):
  """sqrt(v)/scale of a root code: 0, or 2^(-j quarters/8)."""
  level = _pow2_eighths((code - (2**bits - 1)) * quarters)
  return jnp.where(code > 0, level, 0)


def _seed(count: jax.Array) -> jax.Array:
  return _rounding.mix(count.astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + 17)


# A block's scales are 2^(e/8) for integers e: the ratio's as uint8 -e in
# [0, 255], sqrt(v)'s as int16 e (_ZERO_ROOT: a block of zeros).
_ZERO_ROOT = -(2**15)


def _fit_exponent(largest, low, high):
  """The smallest e in [low, high] with 2^(e/8) >= largest (low for 0)."""
  e = jnp.ceil(_SCALE_STEPS * jnp.log2(largest))
  return jnp.clip(jnp.where(largest > 0, e, low), low, high).astype(jnp.int32)


def _scales(ratio_code, root_code):
  ratio = jnp.exp2(-ratio_code.astype(jnp.float32) / _SCALE_STEPS)
  # 2^-inf = 0 for a block of zeros: the select stays inside the per-block
  # kernel (exp2 ends it) rather than in every element's.
  e = jnp.where(root_code == _ZERO_ROOT, -jnp.inf, root_code.astype(jnp.float32))
  return ratio, jnp.exp2(e / _SCALE_STEPS)


def _ratio_and_root(m, v):
  """r = m/sqrt(v) (0 where v is) and sqrt(v): what :func:`_encode_blocks` codes."""
  # With jax_enable_x64 the scalars (the guard's hold) can widen them.
  m, v = m.astype(jnp.float32), v.astype(jnp.float32)
  root = jnp.sqrt(v)
  return jnp.where(root > 0, m / jnp.where(root > 0, root, 1), 0), root


def _encode_blocks(m, v, count, fmt):
  """Codes and scales of blocked float32 moments (scales keep their block axes)."""
  ratio, root = _ratio_and_root(m, v)
  # Scales round up onto their grids: every |r|/scale and sqrt(v)/scale <= 1.
  # sqrt(v)'s grid is its levels' own: a block whose maximum moves keeps its
  # other values on the same levels (a bfloat16 scale moved them all, and
  # re-rounding doubled sqrt(v)'s noise at beta = 0.999).
  ratio_e = _fit_exponent(_block_max(jnp.abs(ratio)), -255, 0)
  root_e = _fit_exponent(_block_max(root), _ZERO_ROOT, 2**15 - 1)
  ratio_code, root_code = (-ratio_e).astype(jnp.uint8), root_e.astype(jnp.int16)
  scale_r, scale_q = _scales(ratio_code, root_code)
  x = ratio * (1 / scale_r)
  u_ratio, u_root = _uniforms(x, _seed(count))
  field = _encode_ratio(x, u_ratio, fmt.ratio_bits)
  # sqrt(v)/scale, not v/scale^2: 1/scale^2 overflows below sqrt(v) ~ 1e-19.
  # One division per block, ending the block's computation: XLA keeps it
  # out of the per-element kernel instead of redoing it for every element.
  y = root * (1 / jnp.where(scale_q > 0, scale_q, jnp.inf))
  y2 = y * y
  code = _encode_root(y2, u_root, fmt.root_bits, fmt.root_quarters)
  word = (field << fmt.root_bits) | code
  return word.astype(fmt.word), ratio_code, root_code


def _decode_blocks(codes, ratio_scale, root_scale, fmt, ratio_limit=None):
  """Blocked float32 moments of blocked codes and scales.

  ``ratio_limit`` (sqrt(c_k) of the stored step) clips the ratio to
  the bound the float moments obey; rounding up can pass it by one level.
  """
  word = codes.astype(jnp.int32)
  scale_r, scale_q = _scales(ratio_scale, root_scale)
  root = scale_q * _decode_root(
    word & (2**fmt.root_bits - 1), fmt.root_bits, fmt.root_quarters
  )
  ratio = scale_r * _decode_ratio(word >> fmt.root_bits, fmt.ratio_bits)
  if ratio_limit is not None:
    ratio = jnp.clip(ratio, -ratio_limit, ratio_limit)
  return ratio * root, root * root


def _zero_word(fmt: _Format) -> int:
  # The encoding of m = v = 0: ratio 0 (field K) and root code 0.
  return (2 ** (fmt.ratio_bits - 1) - 1) << fmt.root_bits


def _block_scales(scale: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Stored per-block scales viewed against :func:`_blocked` arrays."""
  s = scale[None] if len(shape) == 1 else scale
  return s[..., :, None, :, None]


def encode(m, v, count, state_dtype):
  """Stores float32 moments as ``(codes, ratio_scale, root_scale)`` of one leaf.

  ``count`` seeds the rounding (pass the step's count; see :doc:`lowbit`).
  """
  fmt = _FORMATS[state_dtype]
  m_blocks, v_blocks = (_blocked(x.astype(jnp.float32)) for x in (m, v))
  codes, ratio_scale, root_scale = _encode_blocks(m_blocks, v_blocks, count, fmt)
  shape = scale_shape(m.shape)
  return (
    _unblocked(codes, m.shape),
    ratio_scale.reshape(shape),
    root_scale.reshape(shape),
  )


def decode(codes, ratio_scale, root_scale, state_dtype):
  """The float32 moments ``(m, v)`` of one leaf stored by :func:`encode`."""
  fmt = _FORMATS[state_dtype]
  m, v = _decode_blocks(
    _blocked(codes, _zero_word(fmt)),
    _block_scales(ratio_scale, codes.shape),
    _block_scales(root_scale, codes.shape),
    fmt,
  )
  return _unblocked(m, codes.shape), _unblocked(v, codes.shape)


def _empty_codes(shape, fmt: _Format, like=None):
  zero_word = _zero_word(fmt)
  if like is not None:
    codes = jnp.full_like(like, zero_word, dtype=fmt.word)
  else:
    codes = jnp.full(shape, zero_word, fmt.word)
  return (
    codes,
    jnp.full(scale_shape(shape), 255, jnp.uint8),
    jnp.full(scale_shape(shape), _ZERO_ROOT, jnp.int16),
  )


def _is_masked(x) -> bool:
  return isinstance(x, optax.MaskedNode)


def _is_static_zero(x) -> bool:
  return isinstance(x, int | float) and x == 0


def _is_static_positive(x) -> bool:
  return isinstance(x, int | float) and x > 0


def _quantized_leaves(params, min_size, full_precision_mask):
  """A tree of bools: which leaves store low-bit moments.

  ``optax.masked`` and ``optax.partition`` hand the transform params with
  ``optax.MaskedNode()`` holes; a mask written for the whole tree has a bool
  there, and the hole stays a hole.
  """
  keep = full_precision_mask
  if callable(keep):
    keep = keep(params)
  if keep is None:
    keep = jax.tree.map(lambda _: False, params)

  def quantized(p, k):
    if _is_masked(p):
      return p
    size = int(np.prod(p.shape))
    return not k and len(p.shape) >= 1 and size > 0 and size >= min_size

  return jax.tree.map(quantized, params, keep, is_leaf=_is_masked)


def scale_by_balanced_adam_lowbit(
  beta: jax.typing.ArrayLike = 0.95,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  eps_root: jax.typing.ArrayLike = 0.0,
  nesterov: bool = False,
  state_dtype: str = "int8",
  guard_nonfinite: bool = True,
  min_size: int = MIN_SIZE,
  full_precision_mask: Any = None,
) -> optax.GradientTransformation:
  r"""Rescales updates by balanced Adam, keeping large leaves' state in 8 or 4 bits.

  The update is :func:`~balanced_optax.scale_by_balanced_adam`'s,

  .. math::

    m_k = \beta m_{k-1} + (1-\beta) g_k, \quad
    v_k = \beta v_{k-1} + (1-\beta) g_k^2, \quad
    u_k = \frac{m_k / c_k}{\sqrt{v_k / c_k + \varepsilon_r} + \varepsilon},

  computed in float32 from the decoded moments; then :math:`m_k, v_k` are
  stored as :math:`r_k = m_k/\sqrt{v_k} \in [-\sqrt{c_k}, \sqrt{c_k}]` and
  :math:`\sqrt{v_k}`, rounded stochastically without bias (see :doc:`lowbit`).

  Args:
    beta: the one memory of both moments, in [0, 1).
    eps: added to the denominator, >= 0.
    eps_root: added inside the square root, >= 0.
    nesterov: use Nesterov momentum, as ``optax.adam``'s.
    state_dtype: ``"int8"`` (2.05 bytes per parameter) or ``"int4"`` (1.05).
    guard_nonfinite: hold the debiased moments of coordinates whose gradient
      is NaN or +-Inf.
    min_size: leaves with fewer elements keep float32 moments.
    full_precision_mask: a tree of bools like the params (or a callable
      returning one); True keeps that leaf's moments in float32.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`LowBitAdamState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from balanced_optax import lowbit
    >>> tx = optax.chain(
    ...   lowbit.scale_by_balanced_adam_lowbit(0.95, state_dtype="int4", min_size=64),
    ...   optax.scale(-1e-3),
    ... )
    >>> params = {"w": jnp.ones((8, 64)), "b": jnp.zeros(8)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full((8, 64), 0.5), "b": jnp.ones(8)}
    >>> updates, state = tx.update(grads, state)
    >>> print(updates["w"][0, :3], updates["b"][:3])
    [-0.001 -0.001 -0.001] [-0.001 -0.001 -0.001]
    >>> print(state[0].codes["w"].dtype, state[0].mu["w"])
    uint8 MaskedNode()

  References:
    Fernandez-Hernandez et al., `Why Adam Works Better with beta1 = beta2
    <https://arxiv.org/abs/2601.21739>`_, 2026.

    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022.
  """
  _checks.check_beta("beta", beta)
  _checks.check_interval("eps", eps, 0.0)
  _checks.check_interval("eps_root", eps_root, 0.0)
  if state_dtype not in _FORMATS:
    raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype!r}.")
  min_size = _checks.integer("min_size", min_size, 0)
  fmt = _FORMATS[state_dtype]

  def init_fn(params):
    params = _tree.as_arrays(params)
    for p in jax.tree.leaves(params):
      if jnp.issubdtype(p.dtype, jnp.complexfloating):
        raise ValueError(
          "low-bit state (state_dtype 'int8' or 'int4') does not support complex"
          f" params (got {jnp.dtype(p.dtype).name}); use a floating state_dtype."
        )
    low = _quantized_leaves(params, min_size, full_precision_mask)
    masked = optax.MaskedNode()

    def stored(p, q):
      if not q:
        return (masked,) * 3
      return _empty_codes(p.shape, fmt, p if isinstance(p, jax.Array) else None)

    def full(p, q):
      dtype = _tree.compute_dtype(p.dtype)
      return masked if q else jnp.zeros(p.shape, dtype)

    triples = jax.tree.map(stored, params, low)
    codes, ratio_scale, root_scale = _tree.unzip(params, triples, 3)
    return LowBitAdamState(
      count=jnp.zeros([], jnp.int32),
      codes=codes,
      ratio_scale=ratio_scale,
      root_scale=root_scale,
      mu=jax.tree.map(full, params, low),
      nu=jax.tree.map(full, params, low),
      layout=_layout(fmt),
    )

  def moments(g, m, v, hold, beta=beta):
    # The float path's EMA, rounding for rounding: leaves kept in float32
    # update bitwise as scale_by_balanced_adam's.
    m_new = _tree.ema(beta, g, m)
    v_new = _tree.ema(beta, _tree.abs2(g), v)
    if guard_nonfinite:
      finite = jnp.isfinite(g)
      m_new = jnp.where(finite, m_new, hold * m)
      v_new = jnp.where(finite, v_new, hold * v)
    return m_new, v_new

  def direction(g, m, v, c, c_next, ok):
    # As scale_by_balanced_adam: multiplied through by sqrt(c_k), the bias
    # correction is a scalar. ``ok`` (1, or NaN for a misread layout) rides
    # on the scalars.
    root_c = jnp.sqrt(c)
    if nesterov:
      if guard_nonfinite:
        g = jnp.where(jnp.isfinite(g), g, m / c)
      numerator = (ok * beta * root_c / c_next) * m + (ok * (1 - beta) / root_c) * g
    else:
      numerator = m * (ok / root_c)
    root = jnp.sqrt(v if _is_static_zero(eps_root) else v + eps_root * c)
    denom = root + eps * root_c
    if _is_static_positive(eps) or _is_static_positive(eps_root):
      return numerator / denom
    return jnp.where(denom == 0, 0, numerator / jnp.where(denom == 0, 1, denom))

  def update_fn(updates, state, params=None):
    _checks.check_same_structure(
      "scale_by_balanced_adam_lowbit", updates, _params_like(state)
    )
    expected = _layout(fmt)
    if not isinstance(state.layout, jax.core.Tracer) and not np.array_equal(
      np.asarray(state.layout), np.asarray(expected)
    ):
      raise ValueError(
        f"state layout {np.asarray(state.layout).tolist()} is not this "
        f"transform's {np.asarray(expected).tolist()} ([version, word bits, "
        "block]): the state was written by another version or state_dtype."
      )
    ok = jnp.where(jnp.all(state.layout == expected), 1.0, jnp.nan)
    updates = _tree.as_arrays(updates)
    count = optax.safe_increment(state.count)
    hold = _tree.hold_factor(beta, count)
    c = 1 - beta**count
    c_next = 1 - beta ** optax.safe_increment(count)
    treedef = jax.tree.structure(updates)
    flat = [  # MaskedNode entries come out as they are.
      treedef.flatten_up_to(t)
      for t in (state.codes, state.ratio_scale, state.root_scale, state.mu, state.nu)
    ]
    param_leaves = (
      treedef.flatten_up_to(params) if params is not None else [None] * len(flat[0])
    )
    outs, new = [], []
    for g, codes, s_r, s_q, mu, nu, p in zip(
      treedef.flatten_up_to(updates), *flat, param_leaves, strict=True
    ):
      out_dtype = jnp.promote_types(g.dtype, p.dtype) if p is not None else g.dtype
      if _is_masked(mu):
        # The whole step runs on the blocked view, so each block's maximum is
        # a reduction over its own axes, fused with the arithmetic around it.
        shape = g.shape
        blocked = _blocked(codes, _zero_word(fmt))
        # Clipped to sqrt(c_{k-1}), the decoded moments keep |m| <= sqrt(c v)
        # after the EMA, so the step stays within the learning rate.
        m, v = _decode_blocks(
          blocked,
          _block_scales(s_r, shape),
          _block_scales(s_q, shape),
          fmt,
          ratio_limit=jnp.sqrt(1 - beta**state.count),
        )
        g = _blocked(g.astype(jnp.float32))
        # beta as float32, constant or traced alike: 1 - beta rounds the same
        # under optax.inject_hyperparams, and so do the codes' bits.
        m, v = moments(g, m, v, hold, beta=jnp.asarray(beta, jnp.float32))
        # m as r sqrt(v) (within an ulp): the update then reads the two arrays
        # the encode keeps anyway, and XLA does not decode the codes again.
        ratio, root = _ratio_and_root(m, v)
        step = direction(g, ratio * root, v, c, c_next, ok)
        outs.append(_unblocked(step, shape).astype(out_dtype))
        codes, s_r, s_q = _encode_blocks(m, v, count, fmt)
        new.append(
          (
            _unblocked(codes, shape),
            s_r.reshape(s_q_shape := scale_shape(shape)),
            s_q.reshape(s_q_shape),
            mu,
            nu,
          )
        )
      else:
        dtype = _tree.compute_dtype(out_dtype)
        g = g.astype(dtype)
        m, v = moments(g, mu.astype(dtype), nu.astype(dtype), hold)
        outs.append(direction(g, m, v, c, c_next, ok).astype(out_dtype))
        new.append((codes, s_r, s_q, m.astype(mu.dtype), v.astype(nu.dtype)))
    codes, ratio_scale, root_scale, mu, nu = (
      jax.tree.unflatten(treedef, [n[i] for n in new]) for i in range(5)
    )
    return jax.tree.unflatten(treedef, outs), LowBitAdamState(
      count=count,
      codes=codes,
      ratio_scale=ratio_scale,
      root_scale=root_scale,
      mu=mu,
      nu=nu,
      layout=state.layout,
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _params_like(state: LowBitAdamState) -> Any:
  """A tree of the params' structure, ``optax.MaskedNode()`` holes kept: a
  leaf's moments are in ``mu`` or in ``codes``, a hole's in neither."""
  treedef = jax.tree.structure(state.mu, is_leaf=_is_masked)
  mus, codes = (treedef.flatten_up_to(t) for t in (state.mu, state.codes))
  return jax.tree.unflatten(
    treedef,
    [c if _is_masked(m) else 0 for m, c in zip(mus, codes, strict=True)],
  )


def moments(state: LowBitAdamState) -> tuple[Any, Any]:
  """The first and second moments of a :class:`LowBitAdamState`, decoded.

  Example:
    >>> import jax.numpy as jnp
    >>> from balanced_optax import lowbit
    >>> tx = lowbit.scale_by_balanced_adam_lowbit(0.9, min_size=0)
    >>> state = tx.init(jnp.zeros(64))
    >>> _, state = tx.update(jnp.full(64, 2.0), state)
    >>> mu, nu = lowbit.moments(state)
    >>> print(mu[:2], nu[:2])  # 0.2 and 0.4, to the codes' precision
    [0.18827587 0.18827587] [0.35355344 0.35355344]
  """
  treedef = jax.tree.structure(state.mu, is_leaf=_is_masked)
  fields = (state.codes, state.ratio_scale, state.root_scale, state.mu, state.nu)
  mus, nus = [], []
  for codes, s_r, s_q, mu, nu in zip(
    *(treedef.flatten_up_to(f) for f in fields), strict=True
  ):
    if _is_masked(mu) and not _is_masked(codes):
      mu, nu = decode(codes, s_r, s_q, _format_of(codes))
    mus.append(mu)
    nus.append(nu)
  return jax.tree.unflatten(treedef, mus), jax.tree.unflatten(treedef, nus)


def _format_of(codes) -> str:
  return next(k for k, f in _FORMATS.items() if jnp.dtype(f.word) == codes.dtype)
