"""Every public docstring documents its arguments and carries an example that runs."""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import balanced_optax

MODULES = sorted(
  info.name
  for info in pkgutil.iter_modules(balanced_optax.__path__, "balanced_optax.")
  if not info.name.rsplit(".", 1)[-1].startswith("_")
)
FUNCTIONS = sorted(
  name
  for name in balanced_optax.__all__
  if inspect.isfunction(getattr(balanced_optax, name))
)
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _args_section(doc: str) -> str:
  match = re.search(r"\n\s*Args:\n(.*?)(?:\n\s*\n\s*[A-Z][a-z]+:\n|\Z)", doc, re.S)
  return match.group(1) if match else ""


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_argument_is_documented(name):
  fn = getattr(balanced_optax, name)
  documented = set(
    re.findall(r"^\s{2,}(\w+)(?: \(.*?\))?:", _args_section(fn.__doc__), re.M)
  )
  parameters = set(inspect.signature(fn).parameters)
  assert parameters <= documented, f"{name}: undocumented {parameters - documented}"


@pytest.mark.parametrize("name", sorted(balanced_optax.__all__))
def test_every_public_name_has_an_example_that_runs(name):
  obj = getattr(balanced_optax, name)
  if not (inspect.isfunction(obj) or inspect.isclass(obj)):
    pytest.skip(f"{name} is a constant; its module's examples cover it")
  if inspect.isclass(obj) and issubclass(obj, tuple):
    pytest.skip(
      f"{name} is a state/result NamedTuple; its producer's example covers it"
    )
  tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
  examples = sum(len(t.examples) for t in tests)
  assert examples >= 2, f"{name}'s docstring has no example"
  runner = doctest.DocTestRunner(optionflags=_FLAGS)
  for t in tests:
    runner.run(t)
  assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
  module = importlib.import_module(module_name)
  result = doctest.testmod(module, optionflags=_FLAGS)
  assert result.failed == 0, f"{result.failed} docstring example(s) failed"
  assert result.attempted > 0, f"{module_name} has no docstring example"
