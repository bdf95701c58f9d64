"""Reads an optimized HLO module (``compiled.as_text()``): kernels and traffic.

An elementwise optimizer step is memory-bound, so its time is set by how many
bytes its kernels move. This module counts, in the executable XLA produced,
the kernels (fusions), the buffer copies, and the bytes each kernel reads and
writes (the sizes of its operands and results): the traffic the step really
does, to set beside the least traffic it could do.
"""

import math
import re
from typing import Any

_DTYPE_BYTES = {
  "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2,
  "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
  "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\dm\d\w*)?)\[([\d,]*)\]")
_OPCODE = re.compile(r"(?<![\w.\-])([a-z][\w\-]*)\(")
_OPERAND = re.compile(r"%([\w.\-]+)")
# Instructions that move no data of their own.
_FREE = {
  "parameter", "tuple", "get-tuple-element", "bitcast", "constant",
  "after-all", "partition-id", "replica-id", "opt-barrier",
  "call", "while", "conditional",  # their bodies are counted instead
}  # fmt: skip


def _bytes(type_text: str) -> float:
  """Bytes of an HLO type: an array ``f32[8,4]{1,0}`` or a tuple of them."""
  total = 0.0
  for dtype, dims in _SHAPE.findall(type_text):
    if dtype in _DTYPE_BYTES:
      size = math.prod(int(d) for d in dims.split(",") if d)
      total += _DTYPE_BYTES[dtype] * size
    elif dtype.startswith("f8"):
      total += math.prod(int(d) for d in dims.split(",") if d)
  return total


def _instructions(hlo_text: str):
  """Yields (computation, name, result type, opcode, operands, attributes)."""
  computation = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      header = line.removeprefix("ENTRY").strip()
      computation = header.split()[0].lstrip("%")
      continue
    name, eq, rest = line.strip().removeprefix("ROOT ").partition(" = ")
    if not eq or computation is None:
      continue
    match = _OPCODE.search(rest)
    if match is None:
      continue
    depth, end = 0, match.end() - 1
    for end in range(match.end() - 1, len(rest)):
      depth += {"(": 1, ")": -1}.get(rest[end], 0)
      if depth == 0:
        break
    operands = _OPERAND.findall(rest[match.end() : end])
    yield (
      computation,
      name.lstrip("%"),
      rest[: match.start()],
      match.group(1),
      operands,
      rest[end + 1 :],
    )


def summarize(hlo_text: str) -> dict[str, Any]:
  """Kernels, copies and memory traffic of an optimized HLO module.

  Fusion bodies and reducer computations are skipped (their instructions run
  inside the kernel that calls them); every other instruction that moves data
  counts once, reading each operand in full and writing its result.

  Args:
    hlo_text: ``jax.jit(f).lower(...).compile().as_text()``.

  Returns:
    ``{"fusions", "copies", "kernels", "traffic_bytes", "ops"}``: the number
    of fusion instructions, of copy instructions, of all data-moving
    instructions, the bytes they read plus write, and a count per opcode.

  Example:
    >>> text = '''ENTRY %main (a: f32[4]) -> f32[4] {
    ...   %a = f32[4]{0} parameter(0)
    ...   ROOT %f = f32[4]{0} fusion(%a), kind=kLoop, calls=%body
    ... }'''
    >>> summarize(text)["traffic_bytes"]
    32.0
  """
  instructions = list(_instructions(hlo_text))
  sizes = {name: _bytes(result) for _, name, result, *_ in instructions}
  inner = set()  # computations that run inside another instruction's kernel
  for _, _, _, opcode, _, attributes in instructions:
    if opcode != "call":
      inner.update(re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", attributes))
  ops: dict[str, int] = {}
  traffic = 0.0
  for computation, name, _, opcode, operands, _ in instructions:
    if computation in inner or opcode in _FREE:
      continue
    ops[opcode] = ops.get(opcode, 0) + 1
    traffic += sizes[name] + sum(sizes.get(o, 0.0) for o in operands)
  return {
    "fusions": ops.get("fusion", 0),
    "copies": ops.get("copy", 0) + ops.get("copy-start", 0),
    "kernels": sum(ops.values()),
    "traffic_bytes": traffic,
    "ops": dict(sorted(ops.items())),
  }
