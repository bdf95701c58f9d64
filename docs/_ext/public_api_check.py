"""Resolves references to the public names (tests/docs_test.py checks that
docs/api.rst documents every one).

The public names are documented once, at the top level (``balanced_optax.X``,
as optax documents ``optax.X``). A docstring inside a module may refer to them
by their bare name or through their defining module (``:func:`tied_moments```
in ``balanced_optax.moments``); such a reference resolves to the top-level
entry. Anything else that does not resolve stays a warning.
"""

import balanced_optax

_PUBLIC = frozenset(balanced_optax.__all__)


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
  app.connect("missing-reference", _resolve_public_name)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
