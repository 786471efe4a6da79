"""The 2026 score (cell-eval2 preset vcc2026): the regressor vs the baselines, raw counts out.

Datlinger (raw counts, 20 perturbations): trained on one half of the perturbations
(PerturbationSplit, 2 folds, fold 0), scored on the held-out half -- cell-eval2 refuses
this reference (no measurable aggregate effect at 59 UMI per cell), which is recorded. The H1 sample
(5 perturbations) is too small to hold any out (cell-eval2 finds the baseline
degenerate on 2-3 perturbations), so it is trained and scored on all five: an
in-sample number, stated as such. Every model predicts log1p, the prediction becomes
raw counts on the whole gene axis (sktx's count model), and
``sktx.metrics.vcc2026_evaluate`` scores it (pdex DE on CPU). Wall time of cell-eval2:
the first model's call includes the baseline and the 5-split replicate anchor, later
models reuse them.

    python benchmarks/bench_vcc2026.py
"""

from __future__ import annotations

import logging
import time
import warnings

import anndata as ad
from _common import SHARED, write_result

import sktx
from sktx._counts import predict_output
from sktx.baselines import BASELINES
from sktx.metrics import VCC2026_METRICS, vcc2026_evaluate
from sktx.model_selection import make_query

DATASETS = {
    "datlinger": (
        SHARED / "data" / "datlinger2017_jurkat.h5ad",
        {"perturbation_key": "target_gene", "control_label": "control"},
        True,
    ),
    "h1": (
        SHARED / "data" / "vcc2025_h1_subset.h5ad",
        {"perturbation_key": "target_gene", "control_label": "non-targeting"},
        False,
    ),
}
SHORT = {
    "pds_cosine": "PDS cos",
    "expr_mse_unbiased_capped_norm": "MSE norm",
    "de_wilcoxon_direction_fidelity_yield_raw": "dir fidelity",
    "de_wilcoxon_direction_reach_raw": "dir reach",
    "de_wilcoxon_sig_jaccard": "sig Jaccard",
    "de_wilcoxon_lfc_nmae": "LFC nMAE",
}
COLUMNS = ["data", "model", *[SHORT[m] for m in VCC2026_METRICS], "score", "cell-eval2 s"]


def _models(keys):
    reg = sktx.PerturbationRegressor(
        max_epochs=5, set_size=16, random_state=0, on_unknown_target="warn", **keys
    )
    from sklearn.pipeline import Pipeline

    yield (
        "PerturbationRegressor",
        Pipeline([("select", sktx.GeneSelector(n_genes=200, **keys)), ("model", reg)]),
    )
    for name, factory in BASELINES.items():
        yield name, factory(**keys)


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    rows, extra = [], {}
    for data_name, (path, keys, hold_out) in DATASETS.items():
        data = sktx.prepare(ad.read_h5ad(path), **keys)
        if hold_out:
            cv = sktx.PerturbationSplit(n_splits=2, shuffle=True, random_state=0, **keys)
            train_idx, test_idx = next(cv.split(data))
            train, test = data[train_idx], data[test_idx]
        else:
            train = test = data
        query = make_query(test, random_state=0)
        extra[data_name] = {
            "held_out": hold_out,
            "scored_perturbations": sorted(set(test.perturbations)),
            "cells": int(data.n_obs),
            "genes": int(data.n_vars),
        }
        for name, model in _models(keys):
            t0 = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - t0
            pred = predict_output(model, query, output="counts", all_genes=True, random_state=0)
            t0 = time.perf_counter()
            try:
                res = vcc2026_evaluate(test, pred, **keys)
            except ValueError as exc:  # a property of the reference: the same for every model
                reason = str(exc).split(". ")[0]
                extra[data_name]["refused"] = reason
                rows.append([data_name, "(every model)", *["—"] * 6, "refused", "—"])
                print(data_name, "refused:", reason, flush=True)
                break
            wall = time.perf_counter() - t0
            row = [data_name, name, *[round(float(res.scaled[m]), 3) for m in VCC2026_METRICS]]
            row += [round(res.score, 3), round(wall, 1)]
            rows.append(row)
            extra[data_name][name] = {
                "raw": res.metrics.round(4).to_dict(),
                "baseline": res.baseline.round(4).to_dict(),
                "replicate": res.replicate.round(4).to_dict(),
                "fit_s": round(fit_s, 1),
                "engine": res.engine,
            }
            print(row, flush=True)
    write_result(
        "vcc2026",
        title="2026 score (cell-eval2 vcc2026, scaled: 0 = mean-response baseline, "
        "1 = split-half replicate)",
        columns=COLUMNS,
        rows=rows,
        notes="Datlinger: fold 0 of a 2-fold PerturbationSplit (10 held-out perturbations); "
        "cell-eval2 refuses the reference (the sum of expr_distance_unbiased over the "
        "perturbations is negative: no measurable aggregate effect at 59 UMI per cell), for "
        "every model alike. H1: in-sample (all 5 perturbations trained and scored; any "
        "held-out subset of 2-3 gives a degenerate baseline). Regressor: GeneSelector 200 "
        "genes + PerturbationRegressor 5 epochs; counts from sktx's NB count model on the "
        "whole gene axis; pdex DE on CPU. cell-eval2 s: the first model of each data set "
        "includes the baseline and the 5-split replicate anchor.",
        extra=extra,
    )


if __name__ == "__main__":
    main()
