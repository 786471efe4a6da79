"""Render every ``benchmarks/results/*.json`` into ``docs/performance.md``.

Run ``make perf-doc`` (or ``python benchmarks/render_performance.py``) after a benchmark.
``python benchmarks/render_performance.py throughput vcc_scale`` rewrites only those
results' sections in place (found by their ``Source:`` line; appended if new).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "performance.md"

HEADER = """# Performance

Every table below is generated from a JSON file in `benchmarks/results/`, written by the
benchmark script named under it, on the machine described there (this project's
development machine: 2 CPU cores, no GPU). Timings on a shared machine are noisy: compare
ratios measured within one run rather than absolute numbers across runs.
Regenerate this page with `make perf-doc`.
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(cols, rows) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def section(path: Path) -> list[str]:
    """The Markdown section of one results file (its tables under ``extra.tables`` too)."""
    res = json.loads(path.read_text())
    m = res.get("machine", {})
    parts = [f"\n## {res['title']}\n"]
    parts.append(
        f"Command: `{res['command']}` — {res['date']}, {m.get('cpu_count')} cores, "
        f"torch {m.get('torch')}, {m.get('torch_threads')} threads. "
        f"Source: `benchmarks/results/{path.name}`.\n"
    )
    parts += _table(res["columns"], res["rows"])
    if res.get("notes"):
        parts.append("\n" + res["notes"].strip() + "\n")
    for table in (res.get("extra") or {}).get("tables", []):
        parts.append(f"\n### {table['title']}\n")
        parts += _table(table["columns"], table["rows"])
        if table.get("notes"):
            parts.append("\n" + table["notes"].strip() + "\n")
    return parts


def render() -> str:
    parts = [HEADER]
    for path in sorted(RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        if not {"title", "columns", "rows"} <= set(res):
            # e.g. identity_baseline.json: a reference manifest, not a table
            print(f"skipped {path.name}: no title/columns/rows")
            continue
        parts += section(path)
    return "\n".join(parts) + "\n"


def replace_sections(text: str, names: list[str]) -> str:
    """``text`` with the sections of results ``names`` re-rendered (appended if new)."""
    for name in names:
        path = RESULTS / f"{name}.json"
        new = "\n".join(section(path)).rstrip("\n") + "\n"
        at = text.find(f"Source: `benchmarks/results/{path.name}`.")
        if at < 0:
            text = text.rstrip("\n") + "\n" + new
            continue
        start = text.rfind("\n## ", 0, at)
        end = text.find("\n## ", at)
        text = text[:start] + new + (text[end:] if end >= 0 else "")
    return text


if __name__ == "__main__":
    names = sys.argv[1:]
    OUT.write_text(replace_sections(OUT.read_text(), names) if names else render())
    print(f"wrote {OUT}")
