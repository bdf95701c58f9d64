"""Every docstring example in the library runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import balanced_optax

MODULES = sorted(
  info.name
  for info in pkgutil.iter_modules(balanced_optax.__path__, "balanced_optax.")
  if not info.name.rsplit(".", 1)[-1].startswith("_")
)


def test_every_public_name_is_documented():
  for name in balanced_optax.__all__:
    doc = getattr(balanced_optax, name).__doc__
    assert doc and len(doc.strip()) > 40, name


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
  module = importlib.import_module(module_name)
  result = doctest.testmod(
    module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
  )
  assert result.failed == 0, f"{result.failed} docstring example(s) failed"


def test_public_transforms_have_examples_and_references():
  for name in (
    "tied_moments",
    "variance_ema",
    "snr_sign_step",
    "scale_by_balanced_adam",
    "balanced_adam",
    "balanced_adamw",
  ):
    doc = getattr(balanced_optax, name).__doc__
    for section in ("Args:", "Returns:", "Example:", "References:", ".. math::"):
      assert section in doc, (name, section)
