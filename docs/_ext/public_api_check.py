"""Keeps the API reference complete and its references resolvable.

* Every name of ``balanced_optax.__all__`` must be documented by an autodoc
  directive (in ``docs/api.rst``); a missing one is reported as a warning,
  which ``sphinx-build -W`` turns into an error.
* The public names are documented once, at the top level (``balanced_optax.X``,
  as optax documents ``optax.X``). A docstring inside a module may refer to
  them by their bare name or through their defining module
  (``:func:`tied_moments``` in ``balanced_optax.moments``); such a reference
  resolves to the top-level entry. Anything else that does not resolve stays a
  warning.
"""

from sphinx.util import logging

import balanced_optax

_LOGGER = logging.getLogger(__name__)
_PUBLIC = frozenset(balanced_optax.__all__)


def _check_every_public_name(app, env):
  documented = set(env.get_domain("py").objects)
  missing = [
    name
    for name in balanced_optax.__all__
    if f"balanced_optax.{name}" not in documented
  ]
  if missing:
    _LOGGER.warning(
      "public names without an API entry in the docs: %s", ", ".join(missing)
    )


def _resolve_public_name(app, env, node, contnode):
  if node.get("refdomain") != "py":
    return None
  target = node["reftarget"]
  name = target.rsplit(".", 1)[-1]
  if name not in _PUBLIC or not (
    target == name or target.startswith("balanced_optax.")
  ):
    return None
  node["reftarget"] = f"balanced_optax.{name}"
  return env.get_domain("py").resolve_xref(
    env,
    node["refdoc"],
    app.builder,
    node["reftype"],
    f"balanced_optax.{name}",
    node,
    contnode,
  )


def setup(app):
  app.connect("env-check-consistency", _check_every_public_name)
  app.connect("missing-reference", _resolve_public_name)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
