"""A tqdm progress bar with step, loss and throughput."""

import jax
import tqdm


def progress_bar(start: int, total: int, enabled: bool = True) -> tqdm.tqdm:
  """A bar from ``start`` to ``total`` steps, on the first process only.

  ``mininterval`` keeps it to a line every few seconds in log files.
  """
  return tqdm.tqdm(
    initial=start,
    total=total,
    unit="step",
    mininterval=2.0,
    dynamic_ncols=True,
    disable=not enabled or jax.process_index() != 0,
  )
