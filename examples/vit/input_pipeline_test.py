"""Digits, batches, and CIFAR-10 loading on a local stand-in."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

from examples.vit import input_pipeline


def test_digits_split_and_standardisation():
  data = input_pipeline.load("digits")
  assert data.train_images.shape == (1438, 8, 8, 1)
  assert data.test_images.shape == (359, 8, 8, 1)
  assert set(np.unique(data.test_labels)) == set(range(10))
  np.testing.assert_allclose(data.train_images.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(data.train_images.std(), 1.0, atol=1e-3)
  again = input_pipeline.load("")
  np.testing.assert_array_equal(again.test_labels, data.test_labels)  # fixed split


def test_train_batch_is_a_function_of_the_step():
  images, labels = np.arange(50.0).reshape(50, 1, 1, 1), np.arange(50)
  a = input_pipeline.train_batch(images, labels, 3, batch_size=8, seed=0)
  b = input_pipeline.train_batch(images, labels, 3, batch_size=8, seed=0)
  c = input_pipeline.train_batch(images, labels, 4, batch_size=8, seed=0)
  np.testing.assert_array_equal(a["labels"], b["labels"])
  assert not np.array_equal(a["labels"], c["labels"])
  np.testing.assert_array_equal(a["images"][:, 0, 0, 0], a["labels"])


def test_eval_batches_pad_and_mask_the_last_batch():
  images, labels = np.arange(10.0).reshape(10, 1, 1, 1), np.arange(10)
  batches = input_pipeline.eval_batches(images, labels, batch_size=4)
  assert [b["mask"].tolist() for b in batches][-1] == [1, 1, 0, 0]
  real = np.concatenate([b["labels"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(real, labels)


class _FakeSplit:
  """Like a HuggingFace ``Dataset``: columns by name (PIL images here)."""

  def __init__(self, n, rng):
    pixels = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    self.columns = {
      "img": [Image.fromarray(p) for p in pixels],
      "label": np.arange(n) % 10,
    }
    self.pixels = pixels

  def with_format(self, kind):
    assert kind == "numpy"
    return self

  def __getitem__(self, column):
    return self.columns[column]


class _FakeDatasetDict(dict):
  def with_format(self, kind):
    return _FakeDatasetDict({k: v.with_format(kind) for k, v in self.items()})


def _install_fake_datasets(monkeypatch, load_dataset):
  module = types.ModuleType("datasets")
  module.load_dataset = load_dataset
  monkeypatch.setitem(sys.modules, "datasets", module)


def test_cifar10_through_a_stand_in_datasets_library(monkeypatch):
  rng = np.random.default_rng(0)
  splits = _FakeDatasetDict(train=_FakeSplit(20, rng), test=_FakeSplit(10, rng))
  requested = []
  _install_fake_datasets(monkeypatch, lambda name: requested.append(name) or splits)
  data = input_pipeline.load("cifar10")
  assert requested == [input_pipeline.CIFAR10_HUB_NAME]
  assert data.train_images.shape == (20, 32, 32, 3) and data.num_classes == 10
  assert data.test_images.shape == (10, 32, 32, 3)
  np.testing.assert_array_equal(data.test_labels, np.arange(10))
  # Standardised with the training split's per-channel statistics.
  train = splits["train"].pixels.astype(np.float32)
  mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
  np.testing.assert_allclose(
    data.test_images,
    (splits["test"].pixels - mean) / (std + 1e-6),
    rtol=1e-5,
    atol=1e-5,
  )


def test_cifar10_errors_say_what_to_do(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
  with pytest.raises(ImportError, match="pip install datasets"):
    input_pipeline.load("cifar10")

  def offline(name):
    raise OSError(
      "Couldn't reach 'uoft-cs/cifar10' on the Hub (LocalEntryNotFoundError)"
    )

  _install_fake_datasets(monkeypatch, offline)
  with pytest.raises(ConnectionError, match="network is probably unreachable"):
    input_pipeline.load("cifar10")
  with pytest.raises(ValueError, match="'digits' or 'cifar10'"):
    input_pipeline.load("mnist")
