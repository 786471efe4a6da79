"""Pretraining on other real screens, then fine-tuning: does it add to the regressor?

The default ``PerturbationRegressor`` of ``bench_quality.py`` (GO BP prior, three
cross-fitted networks) is fitted on the whole Norman/McFaline file (four cell lines,
``cell_type_key="cell_type"``) and then, warm, on the H1 sample; a copy of that model is
fine-tuned (``warm_start=True``) on each training fold of Datlinger 2017 (the tuning
screen; the 5 folds of ``bench_quality.py``) and scored on the held-out fold with the
same scorer. The held-out folds are never seen by the pretraining, which uses other
screens only. Compared with the stored ``bench_quality.py`` rows of the same folds (the
default model without pretraining and its untrained start).

    python benchmarks/bench_pretrain.py          # ~6 min on 2 cores
"""

from __future__ import annotations

import copy
import time
import warnings

import anndata as ad
import numpy as np
import torch
from _common import write_result
from bench_quality import MODEL, START, load, load_store, regressor, score_fold

from sktx.model_selection import PerturbationSplit

METRICS = ("des", "pds", "mae", "vcc")
TARGET = "datlinger"


def pretrained():
    """The default regressor fitted on Norman/McFaline (all lines), then on H1."""
    from bench_quality import NORMAN

    devel = ad.read_h5ad(NORMAN)
    keys = {"perturbation_key": "perturbation", "control_label": "control"}
    model = regressor({**keys, "cell_type_key": "cell_type"}, None).fit(devel)
    h1, h1_keys = load("vcc_h1")
    model.set_params(warm_start=True, cell_type_key=None, **h1_keys).fit(h1)
    return model


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    t0 = time.perf_counter()
    base = pretrained()
    pre_s = time.perf_counter() - t0
    adata, keys = load(TARGET)
    cv = PerturbationSplit(5, shuffle=True, random_state=0, **keys)
    per_fold = []
    for train, test in cv.split(adata):
        model = copy.deepcopy(base).set_params(warm_start=True, cell_type_key=None, **keys)
        model.fit(adata[train].copy())
        rec = score_fold(model, adata[test].copy(), keys)
        rec["residual_scale"] = float(model.residual_scale_)
        per_fold.append(rec)
        print({k: round(rec[k], 5) for k in (*METRICS, "residual_scale")}, flush=True)
    stored = load_store().get(TARGET, {}).get("models", {})
    rows = []
    for name, recs in (
        ("pretrained + fine-tuned", per_fold),
        ("default, no pretraining (bench_quality.py)", stored.get(MODEL, {}).get("per_fold")),
        ("its untrained start (bench_quality.py)", stored.get(START, {}).get("per_fold")),
    ):
        if not recs:
            continue
        rows.append([name, *[round(float(np.mean([r[k] for r in recs])), 5) for k in METRICS]])
    write_result(
        "pretrain",
        title="Pretraining on other screens, fine-tuning on Datlinger 2017 (held out, 5-fold)",
        columns=["model", "DES", "PDS", "MAE", "VCC score"],
        rows=rows,
        notes="Pretraining: the default PerturbationRegressor of bench_quality.py (GO BP 2021, "
        "crossfit=3, 1 thread) on the whole Norman/McFaline devel file (cell_type_key="
        "'cell_type') and then warm on the VCC H1 sample; fine-tuning: warm_start=True on each "
        "training fold of Datlinger (5-fold PerturbationSplit(shuffle=True, random_state=0), "
        "500 HVGs), network j continuing from pretrained network j; scored as in "
        "bench_quality.py. The other rows are bench_quality.py's stored results for the same "
        f"folds. Pretraining took {pre_s:.0f} s. Residual factor per fold: "
        + ", ".join(f"{r['residual_scale']:.2f}" for r in per_fold)
        + ".",
        extra={"per_fold": per_fold, "pretrain_s": round(pre_s, 1)},
    )


if __name__ == "__main__":
    main()
