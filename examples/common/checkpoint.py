"""Crash-safe periodic checkpoints with orbax.

Each save writes the whole :class:`TrainState` into a temporary directory and
renames it to ``<step>/`` only when complete, so a process killed at any
moment (even mid-save) leaves the previous complete checkpoints intact and at
most a temporary directory, which the next run deletes. Saves are synchronous:
when ``save`` returns the checkpoint is on disk, so a crash loses at most one
checkpoint interval of work. Restores are bit-exact, and they place every
array directly with the sharding the run uses.
"""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a pytree of arrays under ``directory/<step>``.

  Args:
    directory: where the step directories go (created if missing).
    max_to_keep: how many of the most recent checkpoints to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      # Leftovers of a save that was killed are removed when we start.
      cleanup_tmp_directories=True,
      enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore(self, step: int, like=None):
    """Restores the checkpoint of ``step``.

    Args:
      step: a saved step.
      like: a tree of arrays or ``jax.ShapeDtypeStruct`` whose structure,
        dtypes and shardings the result takes; None restores the saved tree
        as nested dicts and lists.
    """
    abstract = (
      None if like is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    )
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, like):
    """Returns ``(tree, step)`` from the newest checkpoint, or ``(like, 0)``."""
    step = self.latest_step()
    if step is None:
      return like, 0
    return self.restore(step, like), step

  def save(self, step: int, tree) -> None:
    """Writes ``tree`` as checkpoint ``step``; returns once it is complete."""
    self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
