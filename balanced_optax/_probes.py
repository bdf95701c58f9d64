r"""Probe gradients to sketched directions, for :func:`select_beta` (private).

At a checkpoint of the pilot, :class:`Probe` sums ``num_probes`` gradients
per group and pooled, turns the sums into balanced Adam's direction
:math:`\hat r = \hat\mu / (\sqrt{\hat q} + \varepsilon)` and sketches it to a
short vector on device (:func:`sketch`). Non-finite gradients are left out of
the sums, and each leaf's sums are kept at a power-of-two scale, so they
neither overflow nor underflow where the gradients do not. See
docs/choosing_beta.md, "The pilot in detail".
"""

import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from balanced_optax import _rounding


def leaf_seeds(num_leaves: int, seed: int) -> jax.Array:
  """One uint32 hash seed per leaf, a pure function of (seed, leaf position)."""
  first = jnp.uint32(seed % 2**32) * jnp.uint32(0x9E3779B1)
  return _rounding.mix(_rounding.mix(jnp.arange(num_leaves, dtype=jnp.uint32) + first))


def sum_dtype(dtype: Any = jnp.float32) -> jnp.dtype:
  """float64 (complex128 for complex) with x64 on, else float32 (complex64)."""
  return jnp.promote_types(dtype, jax.dtypes.canonicalize_dtype(jnp.float64))


def sketch(tree: Any, seeds: jax.Array, dim: int) -> jax.Array:
  r"""Tensor-balanced signed-bucket sketch :math:`z = P r`, on device.

  .. math::

    (Pr)_b = \sum_p n_p^{-1/2} \sum_{i: b_{p,i} = b} s_{p,i}\, r_{p,i},

  with bucket :math:`b_{p,i}` and sign :math:`s_{p,i}` a hash of the seed of
  leaf p and the element's global index i, evaluated in each leaf's own
  shape: under sharding each device scatters its own block and only the
  sketch is reduced across devices.
  """
  leaves = jax.tree.leaves(tree)
  dtype = sum_dtype(jnp.result_type(*leaves))
  total = jnp.zeros((dim,), dtype)
  for k, leaf in enumerate(leaves):
    bits = _rounding.index_bits(leaf.shape, seeds[k])
    bucket = (bits % jnp.uint32(dim)).astype(jnp.int32)
    sign = jnp.where(_rounding.mix(bits ^ jnp.uint32(0x5BD1E995)) >> 31 == 0, 1, -1)
    values = sign * leaf.astype(dtype)
    # Under explicit sharding the replicated sketch must be asked for: each
    # device scatters its own block, then the partial sketches are summed.
    sharding = jax.typeof(leaf).sharding
    out_sharding = None
    if any(axis is not None for axis in sharding.spec):
      out_sharding = jax.sharding.NamedSharding(sharding.mesh, jax.P())
    contribution = (
      jnp.zeros((dim,), dtype).at[bucket].add(values, out_sharding=out_sharding)
    )
    total = total + contribution / math.sqrt(max(leaf.size, 1))
  return total


# --- Sums that cannot overflow --------------------------------------------------

# The exponent of a leaf that no probe has reached (empty or all zero).
_NO_EXPONENT = -(2**20)


class Sums(NamedTuple):
  """Running sums of probe gradients, each leaf scaled by 2**-exponent."""

  first: Any  # sum of g 2^-e
  second: Any  # sum of |g 2^-e|^2
  exponent: Any  # e, an int32 per leaf
  probes: jax.Array  # how many were summed


def _exp2(e: jax.Array, dtype: Any) -> jax.Array:
  """2**e exactly, in the real dtype of ``dtype`` (e clipped to its normals)."""
  info = jnp.finfo(dtype)
  ints = jnp.int32 if info.bits == 32 else jnp.int64
  biased = jnp.clip(e, info.minexp, info.maxexp - 1).astype(ints) + (info.maxexp - 1)
  return lax.bitcast_convert_type(biased << info.nmant, info.dtype)


def _exponent(x: jax.Array) -> jax.Array:
  """The power of two that brings the leaf's largest |x| into [2^-w-1, 2^w).

  w is a quarter of the dtype's exponent range (32 in float32), so squares and
  sums of the scaled values neither overflow nor underflow; leaves already in
  that range get 0, and their sums are the plain ones, bit for bit.
  """
  w = jnp.finfo(x.dtype).maxexp // 4
  largest = jnp.max(jnp.abs(x), initial=0)
  e = jnp.frexp(largest)[1]
  e = jnp.where(e > w, e - w, jnp.where(e < -w, e + w, 0))
  return jnp.where(largest > 0, e, _NO_EXPONENT)


def _abs2(x: jax.Array) -> jax.Array:
  return x.real * x.real + x.imag * x.imag if jnp.iscomplexobj(x) else x * x


def one_probe(g: Any) -> tuple[Sums, jax.Array]:
  """A gradient as probe sums, or empty sums (and False) where it is not finite."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)]))
  g = jax.tree.map(lambda x: jnp.where(finite, x, 0), g)
  exponent = jax.tree.map(_exponent, g)
  scaled = jax.tree.map(lambda x, e: x * _exp2(-e, x.dtype), g, exponent)
  probes = finite.astype(sum_dtype())
  return Sums(scaled, jax.tree.map(_abs2, scaled), exponent, probes), finite


def merge(a: Sums, b: Sums) -> Sums:
  """The sums of two sets of probes, at the larger exponent of each leaf."""
  exponent = jax.tree.map(jnp.maximum, a.exponent, b.exponent)

  def rescaled(tree, old, power):
    scale = lambda x, e, new: x * _exp2(power * (e - new), x.dtype)
    return jax.tree.map(scale, tree, old, exponent)

  first = jax.tree.map(
    jnp.add, rescaled(a.first, a.exponent, 1), rescaled(b.first, b.exponent, 1)
  )
  second = jax.tree.map(
    jnp.add, rescaled(a.second, a.exponent, 2), rescaled(b.second, b.exponent, 2)
  )
  return Sums(first, second, exponent, a.probes + b.probes)


def direction(sums: Sums, eps: float) -> Any:
  """r = mean / (rms + eps) per element; 0 where every probe was 0."""

  def leaf(first, second, e):
    rms = jnp.sqrt(second / sums.probes)
    r = (first / sums.probes) / (rms + eps * _exp2(-e, rms.dtype))
    return jnp.where(second > 0, r, 0)

  return jax.tree.map(leaf, sums.first, sums.second, sums.exponent)


# --- Probes at one checkpoint ---------------------------------------------------


class Sketches(NamedTuple):
  """One checkpoint's measurement, on the host."""

  z: np.ndarray  # the pooled direction's sketch, (dim,)
  groups: np.ndarray  # each group's, (G, dim)
  sizes: np.ndarray  # finite probes per group, (G,)
  finite: np.ndarray  # per probe, (m,)


def _host(x: jax.Array) -> np.ndarray:
  host = np.asarray(x)
  return host.astype(np.complex128 if np.iscomplexobj(host) else np.float64)


class _Shape(str):
  """A leaf's dtype[shape], printed without quotes."""

  def __repr__(self) -> str:
    return str(self)


def check_gradients(grads: Any, params: Any) -> None:
  """ValueError naming grad_fn unless its output is shaped like params."""
  shaped_like = jax.tree.structure(grads) == jax.tree.structure(params) and all(
    np.shape(g) == np.shape(p)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True)
  )
  if not shaped_like:

    def shapes(tree):
      text = str(jax.tree.map(lambda x: _Shape(jax.typeof(x).str_short()), tree))
      return text if len(text) <= 300 else text[:300] + "..."

    raise ValueError(
      "grad_fn(params, batch) must return gradients shaped like params, e.g."
      " jax.grad(loss) (not jax.value_and_grad, nor has_aux=True); it returned"
      f" {shapes(grads)} for params {shapes(params)}."
    )


class Probe:
  """Jitted probe measurement: pooled and per-group sketched directions.

  Holds running sums per group and pooled, and one gradient (under gradient
  accumulation, one more: the micro-batches' sum), never the probes themselves.
  """

  def __init__(self, grad_fn, num_probes, num_groups, sketch_dim, eps, seed):
    self.num_probes, self.num_groups, self.seed = num_probes, num_groups, seed
    self._seeds = None

    def gradient(params, batch):
      grads = grad_fn(params, batch)
      check_gradients(grads, params)
      return jax.tree.map(lambda g: g.astype(sum_dtype(g.dtype)), grads)

    def accumulate(sums, params, batch):
      probe, finite = one_probe(gradient(params, batch))
      return merge(sums, probe), finite

    def accumulate_mean(sums, total, micro):
      probe, finite = one_probe(jax.tree.map(lambda g: g / micro, total))
      return merge(sums, probe), finite

    def add_gradient(total, params, batch):
      return jax.tree.map(jnp.add, total, gradient(params, batch))

    def direction_sketch(sums, seeds):
      return sketch(direction(sums, eps), seeds, sketch_dim)

    self._accumulate = jax.jit(accumulate, donate_argnums=0)
    self._accumulate_mean = jax.jit(accumulate_mean, donate_argnums=0)
    self._add_gradient = jax.jit(add_gradient, donate_argnums=0)
    self._direction_sketch = jax.jit(direction_sketch)
    self._merge = jax.jit(merge, donate_argnums=0)

  def _zeros(self, params: Any, real: bool = False) -> Any:
    def zeros(x):
      dtype = sum_dtype(jnp.result_type(x))
      dtype = jnp.finfo(dtype).dtype if real else dtype
      # Keep the params' sharding: sums of a sharded model stay sharded.
      sharding = x.sharding if isinstance(x, jax.Array) else None
      return jnp.zeros(np.shape(x), dtype, device=sharding)

    return jax.tree.map(zeros, params)

  def _empty(self, params: Any) -> Sums:
    exponent = jax.tree.map(lambda _: jnp.int32(_NO_EXPONENT), params)
    probes = jnp.zeros((), sum_dtype())
    return Sums(self._zeros(params), self._zeros(params, real=True), exponent, probes)

  def _add(self, sums, params, batches: Iterator[Any], micro: int):
    if micro == 1:
      return self._accumulate(sums, params, next(batches))
    total = self._zeros(params)
    for _ in range(micro):
      total = self._add_gradient(total, params, next(batches))
    return self._accumulate_mean(sums, total, float(micro))

  def __call__(self, params: Any, batches: Iterable[Any], micro: int = 1) -> Sketches:
    """Sketches from ``num_probes`` gradients, each the mean of ``micro`` batches."""
    if self._seeds is None:
      self._seeds = leaf_seeds(len(jax.tree.leaves(params)), self.seed)
    per_group = self.num_probes // self.num_groups
    pooled, groups, flags = None, [], []
    batches = iter(batches)
    for _ in range(self.num_groups):
      sums = self._empty(params)
      for _ in range(per_group):
        sums, finite = self._add(sums, params, batches, micro)
        flags.append(finite)
      groups.append(self._direction_sketch(sums, self._seeds))
      pooled = sums if pooled is None else self._merge(pooled, sums)
    z = self._direction_sketch(pooled, self._seeds)
    finite = np.asarray(jnp.stack(flags))
    return Sketches(
      z=_host(z),
      groups=_host(jnp.stack(groups)),
      sizes=finite.reshape(self.num_groups, per_group).sum(axis=1),
      finite=finite,
    )
