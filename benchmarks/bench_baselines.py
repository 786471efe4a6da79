"""Baselines on the real Norman/McFaline data, 5-fold cross-validation over perturbations.

For the K562 part (Norman 2019, 33 perturbations incl. 15 combinations) and the
full file (4 cell types, each scored against its own controls), every baseline
is fitted on 4/5 of the perturbations and predicts the held-out fifth from the
test fold's control cells (``sktx.metrics`` scorers, cell-eval definitions).
One fold is also scored with cell-eval itself as a cross-check.

    python benchmarks/bench_baselines.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, GO_BP, KEYS, METRICS, SHARED, peak_rss_gb, write_result

HALLMARK = SHARED / "genesets" / "msigdb_hallmark_v7.0.gmt"


def models(cell_type_key: str | None, regressor: bool = False):
    """Every baseline builds cells as the regressor does (``cells="controls"``; fair)."""
    from sktx.baselines import (
        AdditiveBaseline,
        ControlBaseline,
        KNNBaseline,
        LinearBaseline,
        MeanBaseline,
    )

    kw = {**KEYS, "cell_type_key": cell_type_key}
    fair = {**kw, "cells": "controls"}
    out = {
        "ControlBaseline": ControlBaseline(**kw),  # its cells are the controls themselves
        "MeanBaseline": MeanBaseline(**fair),
        "AdditiveBaseline": AdditiveBaseline(**fair),
        'AdditiveBaseline(effects="joint")': AdditiveBaseline(effects="joint", **fair),
        "LinearBaseline": LinearBaseline(**fair),
    }
    if GO_BP.exists():
        out["LinearBaseline + GO-BP prior"] = LinearBaseline(prior_gene_sets=str(GO_BP), **fair)
        sets = [str(GO_BP)] + ([str(HALLMARK)] if HALLMARK.exists() else [])
        out["KNNBaseline + GO BP, Hallmark"] = KNNBaseline(gene_sets=sets, **fair)
    if regressor:
        from sktx.regressor import PerturbationRegressor

        gene_sets = str(GO_BP) if GO_BP.exists() else None
        out["PerturbationRegressor (defaults, GO-BP)"] = PerturbationRegressor(
            gene_sets=gene_sets, random_state=0, **kw
        )
    return out


def cross_check(adata, cell_type_key) -> dict:
    """Score fold 0 of AdditiveBaseline with sktx and with cell-eval."""
    from sktx.baselines import AdditiveBaseline
    from sktx.metrics import get_scorer, perturbation_metrics, vcc_evaluate, vcc_score
    from sktx.model_selection import PerturbationSplit

    cv = PerturbationSplit(5, shuffle=True, random_state=0, **KEYS)
    train, test = next(cv.split(adata))
    model = AdditiveBaseline(**KEYS, cell_type_key=cell_type_key, cells="controls")
    model.fit(adata[train])
    scorer = get_scorer("vcc")
    real, pred = scorer.real_and_predicted(model, adata[test])
    keys = {**KEYS, "cell_type_key": cell_type_key}
    ours = perturbation_metrics(real, pred, metrics=["des", "pds", "mae"], **keys)
    official = vcc_evaluate(pred, real, num_threads=2, **keys)
    idx = [c for c in ("cell_type", "perturbation") if c in ours.columns]
    theirs = official.results.set_index(idx)
    mine = ours.set_index(idx).loc[theirs.index]
    return {
        "fold": 0,
        "model": "AdditiveBaseline",
        "max_abs_diff_des": float(np.abs(mine["des"] - theirs["overlap_at_N"]).max()),
        "max_abs_diff_pds": float(np.abs(mine["pds"] - theirs["discrimination_score_l1"]).max()),
        "max_abs_diff_mae": float(np.abs(mine["mae"] - theirs["mae"]).max()),
        "vcc_score_sktx": vcc_score(real, pred, **keys),
        "vcc_score_cell_eval": official.score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-cell-eval", action="store_true", help="skip the cell-eval check")
    parser.add_argument(
        "--regressor", action="store_true", help="also PerturbationRegressor (K562 only, slow)"
    )
    args = parser.parse_args()

    import anndata as ad
    from sklearn.model_selection import cross_validate

    from sktx.metrics import get_scorer
    from sktx.model_selection import PerturbationSplit

    full = ad.read_h5ad(DATA)
    datasets = {
        "Norman K562": (full[full.obs["cell_type"] == "k562"].copy(), None),
        "Norman + McFaline (4 cell types)": (full, "cell_type"),
    }
    scoring = {name: get_scorer(name) for _, name, _ in METRICS}
    cv = PerturbationSplit(args.folds, shuffle=True, random_state=0, **KEYS)
    rows, extra = [], {"folds": args.folds, "per_fold": {}}
    for data_name, (adata, ct_key) in datasets.items():
        with_regressor = args.regressor and ct_key is None
        for model_name, model in models(ct_key, with_regressor).items():
            t0 = time.perf_counter()
            # a fold that fails would score NaN and be left out of the mean ('folds scored')
            res = cross_validate(model, adata, cv=cv, scoring=scoring, error_score=np.nan)
            wall = time.perf_counter() - t0
            row = [data_name, model_name]
            for _, name, sign in METRICS:
                vals = sign * res[f"test_{name}"]
                vals = vals[np.isfinite(vals)]
                row.append(f"{vals.mean():.4f} ± {vals.std():.4f}")
            row.append(int(np.isfinite(res["test_pds"]).sum()))
            row.append(round(wall, 1))
            rows.append(row)
            extra["per_fold"][f"{data_name} | {model_name}"] = {
                name: (sign * res[f"test_{name}"]).tolist() for _, name, sign in METRICS
            }
            print(row, flush=True)
        if not args.no_cell_eval:
            extra[f"cell_eval_check {data_name}"] = cross_check(adata, ct_key)
            print(extra[f"cell_eval_check {data_name}"], flush=True)
    extra["peak_rss_gb"] = peak_rss_gb()
    notes = (
        f"{args.folds}-fold `PerturbationSplit(shuffle=True, random_state=0)` over perturbation "
        "labels (a combination may be held out while its singles are in training); mean ± std "
        "over folds. Each held-out perturbed cell is predicted from a control cell of the same "
        "cell type in the test fold (`make_query`); metrics follow cell-eval: DES = "
        "overlap_at_N, PDS = discrimination_score_l1, MAE of pseudobulk log1p, Pearson of "
        "pseudobulk deltas, MSE on the top-20 real DE genes, VCC score = mean of DES/PDS/MAE "
        "scaled against the cell-mean baseline of the test fold (0 = no better). The full "
        "file is scored per cell type. Every baseline builds cells as the regressor does "
        '(`cells="controls"`; ControlBaseline returns the controls). GO-BP prior: SVD (k=10) '
        "of the gene x term matrix of `go_bp_2021.gmt`; KNNBaseline: GO BP 2021 + Hallmark, "
        "defaults. Fold 0 of AdditiveBaseline is re-scored with cell-eval 0.8.2; differences "
        "are in `extra` of the JSON. docs/performance.md's 'Held-out quality' section "
        "(bench_quality.py) covers every dataset, one cell line at a time."
        + (
            " PerturbationRegressor: default parameters, `gene_sets=go_bp_2021.gmt`, "
            "random_state=0; a held-out target it cannot embed (neither measured nor in GO "
            "BP: IER5L) is predicted by its fallback (on_unknown_target='warn') and scored."
            if args.regressor
            else ""
        )
    )
    path = write_result(
        "baselines",
        title="Baselines on Norman/McFaline devel data, 5-fold CV over perturbations",
        columns=["data", "model"] + [m for m, _, _ in METRICS] + ["folds scored", "CV wall s"],
        rows=rows,
        notes=notes,
        extra=extra,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
