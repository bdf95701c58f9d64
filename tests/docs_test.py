"""The API reference (docs/api.rst) documents each public name once, and no other."""

import pathlib
import re

import balanced_optax

API_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.rst"


def test_api_page_documents_exactly_the_public_names():
  documented = re.findall(
    r"^\.\. auto(?:function|class|data):: (\w+)$", API_PAGE.read_text(), re.M
  )
  assert len(documented) == len(set(documented)), "a name is documented twice"
  public = set(balanced_optax.__all__)
  assert set(documented) == public, (
    f"missing from docs/api.rst: {sorted(public - set(documented))}; "
    f"not public: {sorted(set(documented) - public)}"
  )
