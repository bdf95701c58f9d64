"""The package declares exactly what it imports, and ships its type marker."""

import ast
import configparser
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "balanced_optax"
# Import name -> distribution name, where the two differ.
DISTRIBUTIONS = {"jaxlib": "jax"}


def _setup_cfg() -> configparser.ConfigParser:
  config = configparser.ConfigParser()
  config.read(ROOT / "setup.cfg")
  return config


def _requirement_names(lines: str) -> set[str]:
  names = set()
  for line in lines.strip().splitlines():
    match = re.match(r"\s*([A-Za-z0-9_.-]+)", line)
    if match:
      names.add(match.group(1).lower().replace("_", "-"))
  return names


def _third_party_imports() -> dict[str, list[str]]:
  """Top-level modules the package imports, anywhere in its source."""
  found: dict[str, list[str]] = {}
  for path in sorted(PACKAGE.glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top != "balanced_optax" and top not in sys.stdlib_module_names:
          found.setdefault(DISTRIBUTIONS.get(top, top), []).append(
            f"{path.name}:{node.lineno}"
          )
  return found


def test_install_requires_is_exactly_what_the_package_imports():
  imported = _third_party_imports()
  required = _requirement_names(_setup_cfg()["options"]["install_requires"])
  assert set(imported) == required, (
    f"imported but not required: {sorted(set(imported) - required)} "
    f"({ {k: imported[k] for k in set(imported) - required} }); "
    f"required but not imported: {sorted(required - set(imported))}"
  )


def test_chex_is_a_test_dependency_only():
  extras = _setup_cfg()["options.extras_require"]
  assert "chex" in _requirement_names(extras["test"])
  assert "chex" not in _third_party_imports()


def test_py_typed_ships_with_the_package():
  assert (PACKAGE / "py.typed").is_file()
  package_data = _setup_cfg()["options.package_data"]["balanced_optax"]
  assert "py.typed" in package_data.split()
