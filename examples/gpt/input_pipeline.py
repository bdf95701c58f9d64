"""Character-level text data: vocabulary, split, and batches by step.

The default corpus is Shakespeare's plays (public domain), shipped gzipped in
``data/``; ``--data=PATH`` trains on any UTF-8 text file (``.gz`` too). The
vocabulary is the set of characters of the whole file; the last
``val_fraction`` of the text is the validation split, never trained on.
"""

import dataclasses
import gzip
import os

import numpy as np

DEFAULT_CORPUS = os.path.join(os.path.dirname(__file__), "data", "shakespeare.txt.gz")


def _open_text(path: str):
  path = path or DEFAULT_CORPUS
  opener = gzip.open if path.endswith(".gz") else open
  return opener(path, "rt", encoding="utf-8")


def read_text(path: str = "") -> str:
  """Reads a UTF-8 text file (gzipped if it ends in ``.gz``); "" = default."""
  with _open_text(path) as f:
    return f.read()


def count_chars(path: str = "") -> int:
  """The characters of :func:`read_text`'s text, read in chunks so that a
  large file is not held in memory; raises what reading it would raise
  (``OSError``, ``UnicodeDecodeError``, ``EOFError``, ``zlib.error``)."""
  count = 0
  with _open_text(path) as f:
    while chunk := f.read(1 << 20):
      count += len(chunk)
  return count


def split_index(num_chars: int, val_fraction: float) -> int:
  """Where the validation split starts: the last ``val_fraction`` is held out."""
  return int(num_chars * (1 - val_fraction))


@dataclasses.dataclass(frozen=True)
class CharCorpus:
  """A text as integer ids, split into train and validation.

  Attributes:
    vocab: the sorted distinct characters; id i is ``vocab[i]``.
    train_ids: ids of the first part of the text.
    val_ids: ids of the last part.
  """

  vocab: str
  train_ids: np.ndarray
  val_ids: np.ndarray

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(self.vocab.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(table, codes)
    if ids.size and (ids.max() >= len(table) or np.any(table[ids] != codes)):
      raise ValueError("text has characters outside the vocabulary")
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    return "".join(self.vocab[i] for i in np.asarray(ids).reshape(-1))


def make_corpus(text: str, val_fraction: float = 0.1) -> CharCorpus:
  """Builds the vocabulary of ``text`` and splits it at ``1 - val_fraction``."""
  corpus = CharCorpus(
    "".join(sorted(set(text))), np.zeros(0, np.int32), np.zeros(0, np.int32)
  )
  ids = corpus.encode(text)
  split = split_index(len(ids), val_fraction)
  return dataclasses.replace(corpus, train_ids=ids[:split], val_ids=ids[split:])


def _windows(
  ids: np.ndarray, starts: np.ndarray, block_size: int
) -> dict[str, np.ndarray]:
  """Next-character pairs: inputs ids[s:s+L], targets ids[s+1:s+L+1]."""
  index_BxL = starts[:, None] + np.arange(block_size)[None, :]
  return {"inputs": ids[index_BxL], "targets": ids[index_BxL + 1]}


def train_batch(
  ids: np.ndarray, step: int, *, batch_size: int, block_size: int, seed: int
) -> dict[str, np.ndarray]:
  """The batch of ``step``: windows at random offsets drawn from (seed, step).

  A pure function of its arguments, so any process, any restart, draws the
  same batch for the same step.
  """
  if len(ids) <= block_size:
    raise ValueError(
      f"{len(ids)} train characters, need more than block_size={block_size}"
    )
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(ids) - block_size, size=batch_size)
  return _windows(ids, starts, block_size)


def eval_batches(
  ids: np.ndarray, *, batch_size: int, block_size: int, num_batches: int
) -> list[dict[str, np.ndarray]]:
  """``num_batches`` batches of windows evenly spread over ``ids``."""
  if len(ids) <= block_size:
    raise ValueError(
      f"{len(ids)} validation characters, need more than block_size={block_size}"
    )
  count = batch_size * num_batches
  starts = np.linspace(0, len(ids) - block_size - 1, count).astype(np.int64)
  return [_windows(ids, s, block_size) for s in np.split(starts, num_batches)]
