"""Image classification data: scikit-learn's digits (default) or CIFAR-10.

``digits`` ships with scikit-learn (1797 8x8 grey images, no download); a
fixed permutation holds out 20% as the test split. ``cifar10`` comes through
HuggingFace ``datasets`` (``pip install datasets``; the first run downloads
about 150 MB and caches it). Images are standardised per channel with the
training split's mean and standard deviation.
"""

import dataclasses

import numpy as np

CIFAR10_HUB_NAME = "uoft-cs/cifar10"
# The names ``--config.data`` takes ("" is digits), and their image sides.
DATASETS = ("", "digits", "cifar10")
IMAGE_SIDES = {"digits": 8, "cifar10": 32}


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Images N x H x W x C (float32, standardised) and labels N (int32)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int


def standardized(
  train_images, train_labels, test_images, test_labels, num_classes
) -> ImageDataset:
  """Scales both splits by the per-channel statistics of the training split."""
  train = np.asarray(train_images, np.float32)
  mean_C = train.mean(axis=(0, 1, 2))
  std_C = train.std(axis=(0, 1, 2)) + 1e-6
  return ImageDataset(
    (train - mean_C) / std_C,
    np.asarray(train_labels, np.int32),
    (np.asarray(test_images, np.float32) - mean_C) / std_C,
    np.asarray(test_labels, np.int32),
    num_classes,
  )


def load_digits(test_fraction: float = 0.2) -> ImageDataset:
  """scikit-learn's 8x8 digits, 10 classes, split by a fixed permutation."""
  from sklearn.datasets import load_digits as sklearn_digits

  digits = sklearn_digits()
  order = np.random.default_rng(0).permutation(len(digits.target))
  images_NxHxWxC = digits.images[order, :, :, None]
  labels_N = digits.target[order]
  n_test = int(len(order) * test_fraction)
  return standardized(
    images_NxHxWxC[n_test:],
    labels_N[n_test:],
    images_NxHxWxC[:n_test],
    labels_N[:n_test],
    10,
  )


def image_array(column) -> np.ndarray:
  """A column of images (an array, or a list of PIL images / arrays) ->
  N x H x W x C uint8."""
  images = np.stack([np.asarray(image) for image in column])
  return images[..., None] if images.ndim == 3 else images


def load_cifar10() -> ImageDataset:
  """CIFAR-10 (50000 train, 10000 test, 32x32x3) via HuggingFace ``datasets``.

  Raises:
    ImportError: ``datasets`` is not installed.
    ConnectionError: it could not be downloaded (and is not cached).
  """
  try:
    import datasets
  except ImportError as e:
    raise ImportError(
      "--data=cifar10 needs HuggingFace datasets: pip install datasets"
    ) from e
  try:
    splits = datasets.load_dataset(CIFAR10_HUB_NAME).with_format("numpy")
  except Exception as e:  # the library raises many kinds; all mean "no data"
    raise ConnectionError(
      f"could not download {CIFAR10_HUB_NAME} with HuggingFace datasets: the "
      "network is probably unreachable (a cached copy is used when present; "
      f"see HF_DATASETS_CACHE). Original error: {type(e).__name__}: {e}"
    ) from e
  train, test = splits["train"], splits["test"]
  return standardized(
    image_array(train["img"]),
    train["label"],
    image_array(test["img"]),
    test["label"],
    10,
  )


def load(name: str) -> ImageDataset:
  """``""`` or ``"digits"``: scikit-learn digits; ``"cifar10"``: CIFAR-10."""
  if name in ("", "digits"):
    return load_digits()
  if name == "cifar10":
    return load_cifar10()
  raise ValueError(f"--data must be 'digits' or 'cifar10', got {name!r}")


def train_batch(
  images: np.ndarray, labels: np.ndarray, step: int, *, batch_size: int, seed: int
) -> dict[str, np.ndarray]:
  """The batch of ``step``: examples drawn (with replacement) from (seed, step)."""
  index_B = np.random.default_rng([seed, step]).integers(
    0, len(labels), size=batch_size
  )
  return {"images": images[index_B], "labels": labels[index_B]}


def eval_batches(
  images: np.ndarray, labels: np.ndarray, *, batch_size: int
) -> list[dict[str, np.ndarray]]:
  """The whole split in order; the last batch is padded, ``mask`` 0 there."""
  batches = []
  for start in range(0, len(labels), batch_size):
    index = np.arange(start, start + batch_size)
    valid = index < len(labels)
    index = np.where(valid, index, 0)
    batches.append(
      {
        "images": images[index],
        "labels": labels[index],
        "mask": valid.astype(np.float32),
      }
    )
  return batches
