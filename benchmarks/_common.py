"""Helpers shared by the benchmark scripts: machine facts and the results-file schema.

Every benchmark writes ``benchmarks/results/<name>.json`` with :func:`write_result`;
``benchmarks/render_performance.py`` turns all of them into ``docs/performance.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Real data, read from the shared folder beside the checkout (never copied here).
SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "norman2019_mcfaline2023_devel.h5ad"
GO_BP = SHARED / "genesets" / "go_bp_2021.gmt"
KEYS = {"perturbation_key": "perturbation", "control_label": "control"}
# (column, sktx scorer name, sign that turns the scorer's value into the metric)
METRICS = [
    ("DES", "des", 1),
    ("PDS", "pds", 1),
    ("MAE", "neg_mae", -1),
    ("Pearson delta", "pearson_delta", 1),
    ("top-20 DE MSE", "neg_top_de_mse", -1),
    ("VCC score", "vcc", 1),
]


def machine() -> dict:
    """Facts about the machine the numbers were measured on."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def peak_rss_gb() -> float:
    """Peak resident memory of this process in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_result(
    name: str, *, title: str, columns: list[str], rows: list[list], notes: str = "", extra=None
) -> Path:
    """Write one benchmark's table as JSON under ``benchmarks/results``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "title": title,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "columns": columns,
        "rows": rows,
        "notes": notes,
        "extra": extra or {},
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path
