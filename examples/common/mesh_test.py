"""Where arrays live on the mesh."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

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
