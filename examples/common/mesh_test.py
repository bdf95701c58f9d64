"""Where arrays live on the mesh."""

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

import balanced_optax as bo
from examples.common import mesh as mesh_lib


@pytest.mark.parametrize(
  "shape, shards, spec",
  [
    ((256, 128), 8, P("data", None)),  # the largest divisible dimension
    ((96, 512), 8, P(None, "data")),
    ((100, 64), 8, P(None, "data")),  # 100 does not divide by 8
    ((99, 33), 8, P()),  # nothing divides
    ((64,), 8, P()),  # too small to be worth a collective
    ((4096,), 8, P("data")),
    ((256, 128), 1, P()),  # one device: nothing to split
    ((), 8, P()),
  ],
)
def test_fsdp_spec(shape, shards, spec):
  assert mesh_lib.fsdp_spec(shape, shards) == spec


@pytest.mark.parametrize(
  "shape, shards, spec",
  [
    ((256, 128), 8, P("data", None)),
    # 512 / 8 = 64 columns per shard: whole blocks; 96 / 8 is not 64.
    ((96, 512), 8, P(None, "data")),
    ((96, 1024), 16, P(None, "data")),
    ((8, 1024), 8, P(None, "data")),
    ((100, 256), 8, P()),  # 256 / 8 = 32 columns: blocks would straddle
    ((4096,), 8, P("data")),  # 512 per shard
    ((2048,), 64, P()),  # 32 per shard
    ((2048, 3), 8, P("data", None)),  # blocks of 32 rows x 3
    ((1024, 3), 64, P()),  # 16 rows per shard
    ((256, 128), 1, P()),
  ],
)
def test_block_aligned_spec_keeps_low_bit_blocks_whole(shape, shards, spec):
  assert mesh_lib.block_aligned_spec(shape, shards) == spec


def test_low_bit_state_shards_codes_and_scales_alike():
  """A low-bit leaf's codes and both scales split along the same block-aligned
  dimension (64 x 1024 over 8: 128 columns, two blocks, per shard)."""
  mesh = AbstractMesh((8,), (mesh_lib.DATA_AXIS,), axis_types=(AxisType.Auto,))
  params = {
    "w": jax.ShapeDtypeStruct((64, 1024), np.float32),
    "b": jax.ShapeDtypeStruct((8,), np.float32),
  }
  tx = bo.balanced_adam(1e-3, state_dtype="int8", min_size=64)
  state = jax.eval_shape(tx.init, params)
  shardings = mesh_lib.state_shardings(state, mesh, fsdp=True)[0]
  assert state[0].ratio_scale["w"].shape == (64, 16)
  for field in ("codes", "ratio_scale", "root_scale"):
    assert getattr(shardings, field)["w"].spec == P(None, "data")
  assert shardings.mu["b"].spec == P()
  assert shardings.count.spec == P() and shardings.layout.spec == P()


def test_single_process_does_not_initialise_distributed(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(name, raising=False)
  assert not mesh_lib._launched_multiprocess()
  monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is single-process
  assert not mesh_lib._launched_multiprocess()
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert mesh_lib._launched_multiprocess()


def test_put_batch_places_the_global_batch():
  mesh = mesh_lib.make_mesh()
  batch = {"x": np.arange(2 * jax.device_count() * 3).reshape(-1, 3)}
  placed = mesh_lib.put_batch(batch, mesh_lib.batch_sharding(mesh))
  np.testing.assert_array_equal(placed["x"], batch["x"])
  assert placed["x"].sharding.spec == P(mesh_lib.DATA_AXIS)
