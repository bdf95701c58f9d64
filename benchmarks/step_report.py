"""The text tables and verdict lines a step benchmark prints."""

from typing import Any

from benchmarks.step_targets import INFO_RATIOS, TIME_TARGETS, peak_bytes, ratio


def _fmt_bytes(n: float | None) -> str:
  if n is None:
    return "n/a"
  for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return f"{n:.0f}B"


def _table(title: str, corner: str, rows: dict[str, list[str]], leaves) -> list[str]:
  """A titled text table: one row per key, one column per leaf count."""
  header = [corner] + [f"{n} leaves" for n in leaves]
  body = [[name, *cells] for name, cells in rows.items()]
  widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

  def line(row):
    return "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w)
      for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )

  return ["", title, line(header), *(line(row) for row in body)]


def format_report(report: dict[str, Any]) -> str:
  """The tables and verdict lines printed at the end of a run."""
  device = report["device"]
  by_leaves = report["results"]
  leaves = list(by_leaves)
  names = list(next(iter(by_leaves.values()))["variants"])

  def cells(fn):
    return {
      name: [fn(by_leaves[n]["variants"][name]) for n in leaves] for name in names
    }

  def time_cell(r):
    t = r["time_s"]
    return f"{t['median'] * 1e3:.3f} ({t['iqr_rel'] * 100:.0f}%)"

  def hlo_cell(r):
    h = r["hlo"]
    traffic = h["traffic_bytes"] / r["min_traffic_bytes"]
    return f"{h['fusions']}f {h['copies']}c {traffic:.2f}x"

  def memory_cell(r):
    temp = None if r["memory"] is None else r["memory"]["temp_size_in_bytes"]
    return (
      f"{r['lower_and_compile_s']:.2f}s {_fmt_bytes(peak_bytes(r))} "
      f"{_fmt_bytes(temp)} {_fmt_bytes(r['state_bytes'])}"
    )

  ratio_rows = {}
  for label, numer, denom, *_ in TIME_TARGETS + INFO_RATIOS:
    row = []
    for n in leaves:
      q = ratio(by_leaves[n], numer, denom)
      row.append(
        "-" if q is None else f"{q['median']:.2f} [{q['q1']:.2f},{q['q3']:.2f}]"
      )
    ratio_rows[label] = row

  lines = [
    f"device: {device['platform']} / {device['device_kind']} "
    f"(host {device['cpu_model']}, {device['cpu_cores']} cores), "
    f"jax {device['jax']}, optax {device['optax']}; "
    f"{report['config']['params']} float32 params, "
    f"{report['config']['rounds']} interleaved rounds"
  ]
  lines += _table(
    "step time, ms: median (interquartile range / median)",
    "variant",
    cells(time_cell),
    leaves,
  )
  lines += _table(
    "fusions f, copies c, HLO traffic / least traffic (28 B/param in f32)",
    "variant",
    cells(hlo_cell),
    leaves,
  )
  lines += _table(
    "lower+compile time, peak memory, temp memory, optimizer state",
    "variant",
    cells(memory_cell),
    leaves,
  )
  if any(r["variants"][names[0]]["memory"] is None for r in by_leaves.values()):
    lines.append("(this backend gives no memory_analysis(): memory is n/a)")
  lines += _table(
    "time ratios: median of per-round ratios [q1, q3]", "ratio", ratio_rows, leaves
  )
  lines += ["", "targets"]
  for t in report["targets"]:
    ratios = ", ".join(f"{n}: {q:.2f}x" for n, q in t["ratio"].items())
    noise = " (within noise)" if t.get("within_noise") else ""
    lines.append(f"{t['verdict']:<7}{noise} {t['target']}  [{ratios} leaves]")
  return "\n".join(lines)
