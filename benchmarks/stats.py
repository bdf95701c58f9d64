"""Medians and spreads of interleaved timing samples."""

from collections.abc import Sequence

import numpy as np


def quartiles(samples: Sequence[float]) -> dict[str, float]:
  """Median and interquartile range of ``samples``.

  Returns:
    ``{"median", "q1", "q3", "iqr_rel"}`` with ``iqr_rel = (q3 - q1) / median``,
    the spread relative to the median.
  """
  q1, median, q3 = np.percentile(np.asarray(samples, np.float64), [25, 50, 75])
  return {
    "median": float(median),
    "q1": float(q1),
    "q3": float(q3),
    "iqr_rel": float((q3 - q1) / median) if median else 0.0,
  }


def paired_ratio(numer: Sequence[float], denom: Sequence[float]) -> dict[str, float]:
  """Quartiles of the per-round ratios ``numer[r] / denom[r]``.

  Samples taken in the same round ran seconds apart, so their ratio cancels
  most of the drift in how busy the machine was; the median of these ratios is
  steadier than the ratio of two medians.
  """
  numer, denom = np.asarray(numer, np.float64), np.asarray(denom, np.float64)
  if numer.shape != denom.shape or numer.size == 0:
    raise ValueError(
      f"need equal, non-empty samples, got {numer.size} and {denom.size}"
    )
  return quartiles(numer / denom)
