"""Character vocabulary, split and batches."""

import numpy as np
import pytest

from examples.gpt import input_pipeline

TEXT = "to be, or not to be: that is the question.\n" * 10


def test_vocab_split_and_round_trip():
  corpus = input_pipeline.make_corpus(TEXT, val_fraction=0.25)
  assert corpus.vocab == "".join(sorted(set(TEXT)))
  assert len(corpus.train_ids) == int(len(TEXT) * 0.75)
  assert corpus.decode(np.concatenate([corpus.train_ids, corpus.val_ids])) == TEXT
  with pytest.raises(ValueError, match="outside the vocabulary"):
    corpus.encode("TO BE")


def test_non_ascii_text(tmp_path):
  path = tmp_path / "poem.txt"
  path.write_text("Ça va? Ελλάδα — 東京\n" * 5, encoding="utf-8")
  corpus = input_pipeline.make_corpus(input_pipeline.read_text(str(path)), 0.2)
  assert corpus.decode(corpus.encode("Ελλάδα 東京")) == "Ελλάδα 東京"


def test_default_corpus_is_the_bundled_shakespeare():
  text = input_pipeline.read_text()
  assert len(text) > 4_000_000 and "ROMEO" in text


def test_batches_are_a_pure_function_of_the_step():
  ids = input_pipeline.make_corpus(TEXT).train_ids
  batch = lambda step, seed=0: input_pipeline.train_batch(
    ids, step, batch_size=4, block_size=8, seed=seed
  )
  np.testing.assert_array_equal(batch(7)["inputs"], batch(7)["inputs"])
  assert not np.array_equal(batch(7)["inputs"], batch(8)["inputs"])
  assert not np.array_equal(batch(7)["inputs"], batch(7, seed=1)["inputs"])
  b = batch(3)
  assert b["inputs"].shape == b["targets"].shape == (4, 8)
  np.testing.assert_array_equal(
    b["inputs"][:, 1:], b["targets"][:, :-1]
  )  # shifted by one


def test_eval_batches_cover_the_split_deterministically():
  ids = np.arange(1000, dtype=np.int32)
  batches = input_pipeline.eval_batches(ids, batch_size=4, block_size=10, num_batches=3)
  starts = np.concatenate([b["inputs"][:, 0] for b in batches])
  assert starts[0] == 0 and starts[-1] == 1000 - 11
  assert np.all(np.diff(starts) > 0)
  np.testing.assert_array_equal(batches[0]["targets"], batches[0]["inputs"] + 1)
