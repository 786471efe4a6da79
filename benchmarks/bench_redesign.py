"""Data checks per `sktx train` run, and `sktx demo` wall time, before vs after the redesign.

Counts, in one `sktx train --data demo --genes 60 --cells 600 --epochs 1` run, how
often the data contract is checked, the counts-vs-log1p decision is taken and the
matrix is read, on this checkout and on an earlier commit (a git worktree), by
watching calls of the functions that do it (``sys.setprofile``; no code is
patched, so both versions are counted the same way). Then times ``sktx demo``
once per version, interleaved, in fresh processes.

Usage::

    python benchmarks/bench_redesign.py [--before 83552ea] [--after REV] [--no-demo]

Writes ``benchmarks/results/redesign.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "redesign.json"
TRAIN = ["train", "--data", "demo", "--genes", "60", "--cells", "600", "--epochs", "1"]

# (file suffix, function name) -> counter name, for both layouts
_WATCH = {
    ("sktx/_validation.py", "validate_adata"): "validations",
    ("sktx/data/_checks.py", "validate"): "validations",
    ("sktx/_validation.py", "is_log_normalized"): "normalisation_decisions",
    ("sktx/data/_object.py", "_decide"): "normalisation_decisions",
    ("sktx/data/_checks.py", "is_log_normalized"): "normalisation_decisions",
    ("sktx/_validation.py", "get_matrix"): "matrix_reads",
    ("sktx/data/_checks.py", "get_matrix"): "matrix_reads",
    ("sktx/data/_object.py", "prepare"): "prepare_calls",
}

_COUNTER = r"""
import json, sys
from collections import Counter
watch = {tuple(k.split("|")): v for k, v in json.loads(sys.argv[1]).items()}
counts = Counter()
def prof(frame, event, arg):
    if event == "call":
        code = frame.f_code
        for (suffix, name), key in watch.items():
            if code.co_name == name and code.co_filename.endswith(suffix):
                counts[key] += 1
sys.setprofile(prof)
from sktx.cli import main
try:
    main(sys.argv[3:])
except SystemExit:
    pass
sys.setprofile(None)
print("COUNTS" + json.dumps(dict(counts)))
"""


def _env(src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="2")
    return env


def _count(src: Path, out: Path) -> dict:
    watch = json.dumps({f"{a}|{b}": v for (a, b), v in _WATCH.items()})
    cmd = [sys.executable, "-c", _COUNTER, watch, "x", *TRAIN, "--out", str(out), "--quiet"]
    res = subprocess.run(cmd, env=_env(src), cwd=src, capture_output=True, text=True)
    line = [s for s in res.stdout.splitlines() if s.startswith("COUNTS")]
    if res.returncode != 0 or not line:
        raise RuntimeError(f"counting run failed in {src}:\n{res.stdout[-2000:]}\n{res.stderr}")
    return json.loads(line[-1][len("COUNTS") :])


def _demo(src: Path, out: Path) -> float:
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "sktx", "demo", "--out", str(out)],
        env=_env(src),
        cwd=src,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(f"demo failed in {src}:\n{res.stderr[-2000:]}")
    return time.perf_counter() - start


def _torch_version() -> str:
    import torch

    return torch.__version__


def as_table(result: dict) -> dict:
    """``result`` with the fields render_performance.py reads (title, columns, rows)."""
    import datetime as dt
    import platform

    before, after = result["before"], result["after"]
    names = sorted(set(before["counts"]) | set(after["counts"]))
    rows = [[n, before["counts"].get(n, "—"), after["counts"].get(n, "—")] for n in names]
    if "demo_s" in after:
        rows.append(["`sktx demo` wall time (s)", before["demo_s"], after["demo_s"]])
    return {
        **result,
        "title": "Redesign: data checks per `sktx train` run, and `sktx demo` time",
        "date": result.get("date") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": _torch_version(),
            "torch_threads": "default",
        },
        "command": "python benchmarks/bench_redesign.py"
        + ("" if after["commit"] == "working tree" else f" --after {after['commit']}")
        + ("" if "demo_s" in after else " --no-demo"),
        "columns": ["", f"before ({before['commit']})", f"after ({after['commit']})"],
        "rows": rows,
        "notes": (
            f"Counted in one `{result['command']}` run per version with `sys.setprofile` "
            "(no code patched). Validations: data-contract checks; decisions: counts/log1p "
            "decisions; `prepare` calls include pass-throughs of an already prepared "
            "object. After the redesign the run checks its file once and each prediction "
            "(model, every baseline, the VCC mean baseline) once: one per input object. "
            "The demo times are one run each, interleaved, in fresh processes; the after "
            "run includes everything else on the working tree at the time."
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="83552ea", help="commit to compare with")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo timing")
    ap.add_argument("--after", default=None, help="commit to compare (default: this working tree)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sktx_redesign_"))
    base, after = tmp / "before", ROOT
    trees = [(base, args.before)]
    if args.after:
        after = tmp / "after"
        trees.append((after, args.after))
    for path, rev in trees:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
            check=True,
            capture_output=True,
        )
    try:
        result = {
            "command": "sktx " + " ".join(TRAIN),
            "before": {"commit": args.before, "counts": _count(base, tmp / "b_train")},
            "after": {
                "commit": args.after or "working tree",
                "counts": _count(after, tmp / "a_train"),
            },
        }
        if not args.no_demo:
            # interleaved, one run each: the ratio is what this noisy machine can tell
            result["before"]["demo_s"] = round(_demo(base, tmp / "b_demo"), 1)
            result["after"]["demo_s"] = round(_demo(after, tmp / "a_demo"), 1)
            result["demo_ratio_after_over_before"] = round(
                result["after"]["demo_s"] / result["before"]["demo_s"], 3
            )
    finally:
        for path, _ in trees:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                capture_output=True,
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    result = as_table(result)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
