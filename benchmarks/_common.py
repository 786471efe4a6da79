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
#: Columns of a table made of `cross_validate_models` rows.
CV_COLUMNS = ["model"] + [m for m, _, _ in METRICS] + ["CV wall s"]


def regressor_params(keys: dict, epochs: int) -> dict:
    """PerturbationRegressor settings shared by the quality and tuning benchmarks."""
    return dict(
        **keys,
        gene_sets=str(GO_BP),
        max_epochs=epochs,
        n_jobs=1,
        random_state=0,
        # a held-out target in no GO BP term and not measured (IER5L in Norman K562)
        # is predicted from the baseline instead of failing the fold
        on_unknown_target="warn",
    )


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


def cross_validate_models(models: dict, adata, cv, extra: dict) -> list[list]:
    """Score each model with the VCC scorers over ``cv``; one table row per model.

    Rows are ``[name, "mean ± std" per metric of METRICS, CV wall s]``; per-fold values
    go to ``extra["per_fold"][name]``. Prints each row as it is done.
    """
    import time
    import warnings

    from sklearn.model_selection import cross_validate

    from sktx.metrics import get_scorer

    scoring = {name: get_scorer(name) for _, name, _ in METRICS}
    rows = []
    for name, model in models.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = cross_validate(model, adata, cv=cv, scoring=scoring, error_score="raise")
        row = [name]
        for _, metric, sign in METRICS:
            vals = sign * res[f"test_{metric}"]
            row.append(f"{vals.mean():.4f} ± {vals.std():.4f}")
        row.append(round(time.perf_counter() - t0, 1))
        rows.append(row)
        per_fold = {m: (s * res[f"test_{m}"]).tolist() for _, m, s in METRICS}
        extra.setdefault("per_fold", {})[name] = per_fold
        print(row, flush=True)
    return rows
