"""README.md and the docs pages stay true: their code runs and prints what they
show, and README's commands are the ones CI uses."""

import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DOCS = [f for f in sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")]
PAGES = ["README.md", *(os.path.join("docs", name) for name in _DOCS)]


def _read(page):
  with open(os.path.join(ROOT, page), encoding="utf-8") as f:
    return f.read()


README = _read("README.md")
# A python block, optionally followed by a ```text block holding its exact output.
_BLOCK = re.compile(
  r"```python\n(.*?)```\n(?:\s*(?:prints\s*)?```text\n(.*?)```)?", re.S
)
BLOCKS = [
  pytest.param(code, expected, id=f"{page}:{i}")
  for page in PAGES
  for i, (code, expected) in enumerate(_BLOCK.findall(_read(page)))
]


def _command(marker):
  match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", README, re.S)
  assert match, f"README.md lost its {marker} block"
  return match.group(1)


def _fresh_machine_steps(command):
  """The ``&&``-separated steps of a fresh-machine command, checked for shape."""
  steps = [step.strip() for step in command.split("&&")]
  assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], steps
  install = re.fullmatch(r'pip install -e "\.\[([\w,]+)\]"', steps[2])
  assert install, steps[2]
  extras = set(install.group(1).split(","))
  with open(os.path.join(ROOT, "setup.cfg"), encoding="utf-8") as f:
    declared = set(
      re.findall(r"^(\w+) =$", f.read().split("[options.extras_require]")[1], re.M)
    )
  assert extras <= declared, f"README installs undeclared extras {extras - declared}"
  return extras, steps[3:]


def test_main_command_installs_then_runs_a_module_of_the_repository():
  _, (run,) = _fresh_machine_steps(_command("main-command"))
  module = re.fullmatch(r"python -m ([\w.]+)(?: .*)?", run)
  assert module, run
  path = os.path.join(ROOT, *module.group(1).split(".")) + ".py"
  assert os.path.isfile(path), f"README runs {module.group(1)}, which does not exist"


def test_test_command_installs_the_test_extra_and_runs_every_tier():
  extras, steps = _fresh_machine_steps(_command("test-command"))
  assert "test" in extras, extras
  (run,) = [step for step in steps if step.startswith("pytest")]
  assert "-m" not in run.split(), "README's test command must run every tier"


def test_ci_runs_the_readme_test_command():
  script = os.path.join(ROOT, ".ci", "run")
  assert os.access(script, os.X_OK)
  with open(script, encoding="utf-8") as f:
    last_line = f.read().strip().splitlines()[-1]
  assert last_line == _command("test-command")


@pytest.mark.parametrize(("code", "expected"), BLOCKS)
def test_python_blocks_run_and_print_what_they_show(code, expected):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "<page block>", "exec"), {"__name__": "__readme__"})
  if expected:
    _assert_same_output(out.getvalue(), expected)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _assert_same_output(got, want):
  """Same text; numbers equal up to the last printed digit (CPUs round differently)."""
  assert _NUMBER.sub("#", got).split() == _NUMBER.sub("#", want).split(), got
  for g, w in zip(_NUMBER.findall(got), _NUMBER.findall(want), strict=True):
    last_digit = 10.0 ** -len(w.split(".")[1].split("e")[0]) if "." in w else 1.0
    assert abs(float(g) - float(w)) <= max(2 * last_digit, 1e-3 * abs(float(w))), (g, w)
