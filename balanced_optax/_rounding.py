"""Storing float32 moments in bfloat16 without stalling the EMA (private).

An EMA with memory beta moves by (1 - beta) (x - m) per step. Once that is
below half a bfloat16 ulp (2^-9 relative), round-to-nearest throws every step
away and the stored moment stops tracking its target: with beta = 0.999 a
bfloat16 second moment ends tens of percent off. Stochastic rounding keeps the
stored value unbiased, so the EMA converges as in float32, only noisier.

The random bits are a hash of (step count, moment, element index): no key in
the state, the same bits on every device and every rerun (a
resumed run is bit-identical), and the hash is computed in the array's own
shape so that it partitions with the array under sharding.
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


def _random_bits(shape: tuple[int, ...], seed: jax.Array) -> jax.Array:
  """uint32 bits per element: a hash of seed + the element's index."""
  # Start from the runtime seed: an index built from constants alone would be
  # constant-folded by XLA into a literal as large as the array.
  index = jnp.broadcast_to(seed, shape)
  stride = 1
  for axis in reversed(range(len(shape))):
    step = jnp.uint32(stride % 2**32)
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * step
    stride *= shape[axis]
  return _mix(index)


def _stochastic_bfloat16(x: jax.Array, bits: jax.Array) -> jax.Array:
  """Rounds float32 to bfloat16 up with probability equal to the cut fraction.

  Adding 16 random bits below the bfloat16 mantissa and truncating rounds the
  magnitude up with exactly that probability; zeros, infinities and quiet
  NaNs (the only NaNs arithmetic makes) pass through unchanged. No select on
  the side: a second consumer of x would make XLA split the fusion and copy
  the donated state.
  """
  raw = lax.bitcast_convert_type(x, jnp.uint32)
  raw = (raw + (bits >> 16)) & jnp.uint32(0xFFFF0000)  # Now exact in bfloat16.
  return lax.bitcast_convert_type(raw, jnp.float32).astype(jnp.bfloat16)


def store(new: Any, old: Any, *, count: jax.Array, salt: int, stochastic: bool) -> Any:
  """Casts each leaf of ``new`` to the dtype of ``old`` (the stored state).

  float32 values bound for bfloat16 storage are rounded stochastically when
  ``stochastic``; everything else is cast with round-to-nearest. ``salt``
  tells apart the moments of one transform (0 for the first, 1 for the
  second), so that they draw different bits.
  """
  leaves, treedef = jax.tree.flatten(old)
  news = treedef.flatten_up_to(new)
  # One seed per step and moment, shared by all leaves: leaves of one shape
  # then compile to one kernel that XLA reuses (a per-leaf stream made every
  # leaf its own kernel, and a 512-leaf step compiled 10x slower). Rounding
  # stays unbiased for every element; same-shaped leaves draw the same bits.
  seed = _mix(count.astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + jnp.uint32(salt))
  stored = []
  for n, o in zip(news, leaves, strict=True):
    if stochastic and o.dtype == jnp.bfloat16 and n.dtype == jnp.float32:
      stored.append(_stochastic_bfloat16(n, _random_bits(n.shape, seed)))
    else:
      stored.append(n.astype(o.dtype))
  return jax.tree.unflatten(treedef, stored)
