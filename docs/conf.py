"""Sphinx configuration for the balanced_optax documentation.

Build from the repository root (warnings are errors, as in CI):

  pip install -e ".[docs]"
  sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import pathlib
import shutil
import sys

import balanced_optax

_DOCS = pathlib.Path(__file__).parent
sys.path.insert(0, str(_DOCS / "_ext"))

# The notebooks live in notebooks/ beside the code; Sphinx reads pages only from
# inside docs/, so they are copied into docs/notebooks/ (ignored by git) for
# each build. A symbolic link would not do: MyST resolves links through it.
shutil.rmtree(_DOCS / "notebooks", ignore_errors=True)
shutil.copytree(
  _DOCS.parent / "notebooks",
  _DOCS / "notebooks",
  ignore=shutil.ignore_patterns("*.json", ".ipynb_checkpoints"),
)

project = "balanced_optax"
author = "The balanced_optax authors"
copyright = "2026, The balanced_optax authors"
release = balanced_optax.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.mathjax",
  "sphinx.ext.napoleon",
  "sphinx.ext.viewcode",
  "myst_nb",
  "public_api_check",
]

# Docstrings are Google style with reST math, as in optax.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
# jax and optax annotations expand into long unions (optax.Updates is a tree of
# arrays, numbers and containers); the Args sections say what each argument is.
autodoc_typehints = "none"
napoleon_attr_annotations = False
autodoc_preserve_defaults = True  # grid=BETA_GRID, not its 13 floats
autodoc_default_options = {"members": False}

# A reference to a name that does not exist is an error. Names from the
# libraries we build on are not resolved: this build runs offline (no
# intersphinx inventory), so they are accepted as they are.
nitpicky = True
nitpick_ignore_regex = [
  (r"py:.*", r"(optax|jax|jnp|np|numpy|chex|collections|typing|types)(\..*)?"),
  (r"py:.*", r"(Any|Callable|NamedTuple|Sequence|Mapping|ArrayLike|Array)"),
  (r"py:.*", r"ArrayTree"),  # optax's annotations, as autodoc renders them
  (r"py:.*", r"(float|int|bool|str|tuple|list|dict|None|NoneType|ellipsis)"),
]

# Notebooks are rendered with their committed outputs; the tests execute them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = [
  "_build",
  "Thumbs.db",
  ".DS_Store",
]

html_theme = "sphinx_book_theme"
html_title = f"balanced_optax {release}"
html_theme_options = {
  "show_toc_level": 2,
  "navigation_with_keys": False,
}
