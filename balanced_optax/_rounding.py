"""Storing float32 moments in bfloat16 without stalling the EMA (private).

An EMA with memory beta moves by (1 - beta) (x - m) per step. Once that is
below half a bfloat16 ulp (2^-9 relative), round-to-nearest throws every step
away and the stored moment stops tracking its target: with beta = 0.999 a
bfloat16 second moment ends tens of percent off. Stochastic rounding keeps the
stored value unbiased, so the EMA converges as in float32, only noisier.

The random bits are a hash of (step count, leaf, element index): no key in the
state, the same bits on every device and every rerun (a resumed run is
bit-identical), and the hash is computed in the array's own shape so that it
partitions with the array under sharding.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def _mix(x: jax.Array) -> jax.Array:
  """A 32-bit integer hash with good avalanche (lowbias32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _random_bits(shape: tuple[int, ...], count: jax.Array, stream: int) -> jax.Array:
  """uint32 bits per element, a function of (count, stream, element index)."""
  seed = _mix(
    count.astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    + jnp.uint32(stream * 0x85EBCA6B % 2**32)
  )
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(
      stride % 2**32
    )
    stride *= shape[axis]
  return _mix(index ^ seed)


def _stochastic_bfloat16(x: jax.Array, bits: jax.Array) -> jax.Array:
  """Rounds float32 to bfloat16 up with probability equal to the cut fraction."""
  raw = lax.bitcast_convert_type(x, jnp.uint32)
  raw = (raw + (bits >> 16)) & jnp.uint32(0xFFFF0000)  # Now exact in bfloat16.
  rounded = lax.bitcast_convert_type(raw, jnp.float32).astype(jnp.bfloat16)
  return jnp.where(jnp.isnan(x), x.astype(jnp.bfloat16), rounded)


def store(new: Any, old: Any, *, count: jax.Array, salt: int, stochastic: bool) -> Any:
  """Casts each leaf of ``new`` to the dtype of ``old`` (the stored state).

  float32 values bound for bfloat16 storage are rounded stochastically when
  ``stochastic``; everything else is cast with round-to-nearest. ``salt``
  tells apart the moments of one transform (0 for the first, 1 for the
  second), so that they draw different bits.
  """
  treedef = jax.tree.structure(old)
  streams = jax.tree.unflatten(treedef, range(treedef.num_leaves))

  def cast(n, o, leaf):
    if stochastic and o.dtype == jnp.bfloat16 and n.dtype == jnp.float32:
      return _stochastic_bfloat16(n, _random_bits(n.shape, count, 2 * leaf + salt))
    return n.astype(o.dtype)

  return jax.tree.map(cast, new, old, streams)
