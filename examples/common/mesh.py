"""The device mesh, and where each array lives on it.

One mesh axis, ``data``, spans every device of every process. A batch is split
along it (data parallel). With FSDP, each large enough parameter and optimizer
moment is split along its largest dimension divisible by the device count,
so each device holds 1/n of the state; XLA inserts the all-gathers and
reduce-scatters. The same code runs on 1 CPU, n simulated CPU devices, GPUs or
TPUs, in one process or several.
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from balanced_optax import lowbit

DATA_AXIS = "data"
# Arrays smaller than this are replicated: splitting them saves little memory
# and costs a collective each.
MIN_FSDP_SIZE = 1024


def _launched_multiprocess() -> bool:
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(count, "1")) > 1:
      return True
  return False


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` when launched as several processes.

  Detected from the environment: ``JAX_COORDINATOR_ADDRESS`` (with
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), a SLURM step with more than
  one task, or an Open MPI launch. A plain single process does nothing.
  """
  if not _launched_multiprocess() or jax.distributed.is_initialized():
    return
  # jax reads JAX_COORDINATOR_ADDRESS itself but not the other two; SLURM and
  # Open MPI launches are detected by jax from their own variables.
  env = {
    arg: int(os.environ[name])
    for arg, name in (
      ("num_processes", "JAX_NUM_PROCESSES"),
      ("process_id", "JAX_PROCESS_ID"),
    )
    if name in os.environ
  }
  jax.distributed.initialize(**env)


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh with axis ``data`` over all devices."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Splits the leading (batch) dimension over ``data``."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
  """Splits the largest dimension divisible by ``num_shards``, if worth it.

  Args:
    shape: the array's shape.
    num_shards: size of the ``data`` axis.

  Returns:
    ``PartitionSpec`` with ``data`` on the chosen dimension, or a replicated
    spec for small arrays or when no dimension divides.
  """
  if num_shards == 1 or int(np.prod(shape)) < MIN_FSDP_SIZE:
    return PartitionSpec()
  divisible = [d for d, size in enumerate(shape) if size % num_shards == 0]
  if not divisible:
    return PartitionSpec()
  axis = max(divisible, key=lambda d: shape[d])
  return PartitionSpec(*(DATA_AXIS if d == axis else None for d in range(len(shape))))


def block_aligned_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
  """:func:`fsdp_spec` for a low-bit moment: only dimensions whose shards hold
  whole blocks of ``balanced_optax.lowbit`` (64 along the last axis, or
  ``block_shape``'s rows along the one before a short last axis)."""
  if num_shards == 1 or int(np.prod(shape)) < MIN_FSDP_SIZE:
    return PartitionSpec()
  rows, cols = lowbit.block_shape(shape)
  extent = [1] * len(shape)
  extent[-1] = cols
  if len(shape) > 1:
    extent[-2] = rows
  aligned = [d for d, n in enumerate(shape) if n % (num_shards * extent[d]) == 0]
  if not aligned:
    return PartitionSpec()
  axis = max(aligned, key=lambda d: shape[d])
  return PartitionSpec(*(DATA_AXIS if d == axis else None for d in range(len(shape))))


def _low_bit_specs(state: lowbit.LowBitAdamState, num_shards: int):
  """A low-bit state's specs: each leaf's codes and both its per-block scales
  split along one block-aligned dimension (the scales have the leaf's rank,
  blocks counted, so a split of whole blocks splits them alike)."""
  specs = jax.tree.map(lambda c: block_aligned_spec(c.shape, num_shards), state.codes)
  return state._replace(
    count=PartitionSpec(),
    codes=specs,
    ratio_scale=specs,
    root_scale=specs,
    mu=jax.tree.map(lambda x: fsdp_spec(x.shape, num_shards), state.mu),
    nu=jax.tree.map(lambda x: fsdp_spec(x.shape, num_shards), state.nu),
    layout=PartitionSpec(),
  )


def state_shardings(abstract_state, mesh: jax.sharding.Mesh, fsdp: bool):
  """Shardings for a tree of arrays (params, optimizer state, step).

  A moment shaped like its parameter gets the parameter's sharding, so the
  optimizer update runs shard by shard with no communication. Low-bit
  moments (``state_dtype="int8"`` / ``"int4"``) split only where shards hold
  whole blocks, codes and scales alike.
  """
  num_shards = mesh.shape[DATA_AXIS] if fsdp else 1
  is_low_bit = lambda x: isinstance(x, lowbit.LowBitAdamState)
  specs = jax.tree.map(
    lambda x: (
      _low_bit_specs(x, num_shards) if is_low_bit(x) else fsdp_spec(x.shape, num_shards)
    ),
    abstract_state,
    is_leaf=is_low_bit,
  )
  return jax.tree.map(
    lambda spec: NamedSharding(mesh, spec),
    specs,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def replicate(tree, mesh: jax.sharding.Mesh):
  """A copy of ``tree`` whole on every device (a collective: call it on all
  processes), e.g. to read sharded parameters on one process."""
  return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict:
  """Places a global host batch on the mesh, each process giving its shards.

  Every process computes the same global batch (the data order is a function
  of the step), so no process needs another's data.
  """
  return {
    k: jax.make_array_from_callback(x.shape, sharding, lambda index, x=x: x[index])
    for k, x in batch.items()
  }
