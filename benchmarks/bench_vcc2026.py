"""The 2026 score (cell-eval2 preset vcc2026): the regressor vs fair baselines, raw counts out.

Every model is the one ``bench_quality.py`` compares (its ``models()``): the baselines
build cells as the regressor does (``cells="controls"``), the linear and KNN baselines
use GO BP (+ Hallmark), and the regressor is the default one on the same genes, with
its untrained start (``max_epochs=0``) beside it. Every prediction becomes raw counts on
the whole gene axis (sktx's count model) and ``sktx.metrics.vcc2026_evaluate`` scores it
(pdex DE on CPU).

* ``sim_counts`` (simulator, tuning data): 5-fold ``PerturbationSplit`` over
  perturbations, held out -- the one held-out 2026 measurement the shared data allow.
  ~150 cells per perturbation at ~20,000 UMI per cell: cell-eval2 needs at least one
  perturbation with 10 significant genes to scale the fold-change metric, which the
  quality benchmark's simulator (~34 cells per perturbation, 3,000 UMI) never has.
* ``datlinger`` (raw counts, 20 perturbations): fold 0 of a 2-fold split -- cell-eval2
  refuses this reference (no measurable aggregate effect at 59 UMI per cell), recorded.
* ``h1`` (5 perturbations): too small to hold any out (cell-eval2 finds the baseline
  degenerate on 2-3 perturbations), so trained and scored on all five: an in-sample
  number, stated as such.

Wall time of cell-eval2: the first model's call on a reference includes its baseline and
the 5-split replicate anchor; later models reuse them.

    python benchmarks/bench_vcc2026.py                 # all three, 3 count draws, ~60 min
    python benchmarks/bench_vcc2026.py --count-seeds 1 # one draw per fold, ~25 min
    python benchmarks/bench_vcc2026.py --datasets h1   # one
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import anndata as ad
import numpy as np
from _common import SHARED, write_result
from bench_quality import BASELINE_NAMES, KNN_MODEL, KNN_START, MODEL, START, compare, models

import sktx
from sktx._counts import predict_output
from sktx.datasets import make_perturbseq
from sktx.metrics import VCC2026_METRICS, vcc2026_evaluate
from sktx.model_selection import make_query

SIM_KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
#: name -> (loader, estimator keys, how it is split: "cv5", "half" or "in-sample")
DATASETS = {
    "sim_counts": (
        lambda: make_perturbseq(
            n_cells=9000,
            n_genes=500,
            n_perturbations=40,
            n_combinations=10,
            library_size=20000.0,
            random_state=0,
        ),
        SIM_KEYS,
        "cv5",
    ),
    "datlinger": (
        lambda: ad.read_h5ad(SHARED / "data" / "datlinger2017_jurkat.h5ad"),
        {"perturbation_key": "target_gene", "control_label": "control"},
        "half",
    ),
    "h1": (
        lambda: ad.read_h5ad(SHARED / "data" / "vcc2025_h1_subset.h5ad"),
        {"perturbation_key": "target_gene", "control_label": "non-targeting"},
        "in-sample",
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
NAMES = {
    "control": "ControlBaseline",
    "mean": "MeanBaseline",
    "additive": "AdditiveBaseline",
    "additive_joint": 'AdditiveBaseline(effects="joint")',
    "linear": "LinearBaseline + GO BP",
    "knn": "KNNBaseline + GO BP, Hallmark",
    START: "PerturbationRegressor, untrained start",
    MODEL: "PerturbationRegressor (defaults)",
    KNN_START: 'PerturbationRegressor(start="knn"), untrained',
    KNN_MODEL: 'PerturbationRegressor(start="knn")',
}
KEYS_2026 = [*VCC2026_METRICS, "score"]
COLUMNS = ["data", "split", "model", *[SHORT[m] for m in VCC2026_METRICS], "score", "cell-eval2 s"]


def _splits(data, keys, how):
    if how == "in-sample":
        return [(np.arange(data.n_obs), np.arange(data.n_obs))]
    cv = sktx.PerturbationSplit(
        n_splits=5 if how == "cv5" else 2, shuffle=True, random_state=0, **keys
    )
    splits = list(cv.split(data))
    return splits if how == "cv5" else splits[:1]


def _score(model, train, test, keys, seeds: int = 1) -> tuple[dict, float]:
    """Every 2026 metric of one fit, averaged over ``seeds`` draws of the predicted counts.

    The counts are a random draw around the predicted mean, and one draw moves a fold's
    score by ~0.03 (docs/model.md, "The 2026 start"); ``per_seed`` keeps each draw's score.
    """
    model.fit(train)
    query = make_query(test, random_state=0)
    draws, wall = [], 0.0
    for seed in range(seeds):
        pred = predict_output(model, query, output="counts", all_genes=True, random_state=seed)
        t0 = time.perf_counter()
        res = vcc2026_evaluate(test, pred, **keys)
        wall += time.perf_counter() - t0
        draws.append({**{m: float(res.scaled[m]) for m in VCC2026_METRICS}, "score": res.score})
    out = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
    out["per_seed"] = [float(d["score"]) for d in draws]
    return out, wall


def run_dataset(name: str, seeds: int = 1, names=None) -> tuple[list, dict]:
    """Rows (mean ± std over folds) and the stored per-fold records of one dataset.

    ``seeds``: count draws per held-out fold (in-sample data: one); ``names``: the models
    (default all of ``NAMES``).
    """
    loader, keys, how = DATASETS[name]
    data = sktx.prepare(loader(), **keys)
    splits = _splits(data, keys, how)
    factories = models(keys)
    entry = {"split": how, "cells": int(data.n_obs), "genes": int(data.n_vars), "models": {}}
    entry["count_seeds"] = seeds = seeds if how == "cv5" else 1
    entry["perturbations"] = len(
        {lab for lab in data.perturbations if lab != keys["control_label"]}
    )
    for model_name in names or NAMES:
        per_fold, wall = [], 0.0
        for train_idx, test_idx in splits:
            train, test = data[train_idx], data[test_idx]
            try:
                rec, s = _score(factories[model_name](), train, test, keys, seeds)
            except ValueError as exc:  # a property of the reference: the same for every model
                entry["refused"] = str(exc).split(". ")[0]
                print(name, "refused:", entry["refused"], flush=True)
                return [[name, how, "(every model)", *["—"] * 6, "refused", "—"]], entry
            per_fold.append(rec)
            wall += s
        entry["models"][model_name] = {"per_fold": per_fold, "cell_eval2_s": round(wall, 1)}
        print(
            name, model_name, round(float(np.mean([r["score"] for r in per_fold])), 3), flush=True
        )
    rows = []
    for model_name, res in entry["models"].items():
        vals = {k: np.array([r[k] for r in res["per_fold"]]) for k in KEYS_2026}
        cells = [
            f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else round(float(v[0]), 3)
            for v in vals.values()
        ]
        rows.append([name, how, NAMES[model_name], *cells, res["cell_eval2_s"]])
    if len(splits) > 1:
        entry["verdicts"] = {
            m: compare(entry, m, metrics=[(k, False) for k in KEYS_2026]) for m in NAMES
            if m in (MODEL, START, KNN_MODEL, KNN_START)
        }  # fmt: skip
        entry["training_gain"] = {}
        for trained, start in ((MODEL, START), (KNN_MODEL, KNN_START)):
            gain = [a["score"] - b["score"] for a, b in zip(
                entry["models"][trained]["per_fold"], entry["models"][start]["per_fold"],
                strict=True,
            )]  # fmt: skip
            entry["training_gain"][trained] = {"mean": float(np.mean(gain)), "per_fold": gain}
    return rows, entry


def statement(entry: dict, model: str = MODEL) -> str:
    """Where ``model`` wins, ties and loses against the best baseline, per metric."""
    verdict = entry["verdicts"][model]
    parts = []
    for key in KEYS_2026:
        v = verdict[key]
        label = SHORT.get(key, key)
        parts.append(
            f"{label}: {v['verdict']} ({v['model']:.3f} vs {v['baseline_value']:.3f} "
            f"{NAMES[v['baseline']]})"
        )
    text = f"{NAMES[model]}: " + "; ".join(parts) + "."
    if model in entry["training_gain"]:
        gain = entry["training_gain"][model]["mean"]
        text += f" Training adds {gain:+.3f} to the 2026 score over its start."
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument(
        "--count-seeds", type=int, default=3, help="count draws per held-out fold (averaged)"
    )
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    rows, extra = [], {}
    for name in args.datasets:
        new, entry = run_dataset(name, args.count_seeds)
        rows += new
        extra[name] = entry
    held = [n for n in extra if "verdicts" in extra[n]]
    summary = "\n\n".join(
        f"{n} (held out, mean over folds): {statement(extra[n], m)}"
        for n in held
        for m in (MODEL, KNN_START, KNN_MODEL)
    )
    write_result(
        "vcc2026",
        title="2026 score (cell-eval2 vcc2026, scaled: 0 = mean-response baseline, "
        "1 = split-half replicate)",
        columns=COLUMNS,
        rows=rows,
        notes="Models as in bench_quality.py: baselines with the regressor's cell construction "
        '(`cells="controls"`), LinearBaseline with GO BP, KNNBaseline with GO BP + Hallmark, '
        "the default PerturbationRegressor (GO BP prior, every gene of the data) and its "
        'untrained start, and the same with start="knn" (the 2026 start), trained and not. '
        "Counts from sktx's NB count model on the whole gene axis; pdex DE "
        "on CPU; every metric scaled by cell-eval2 between the mean-response baseline of the "
        "scored perturbations themselves (0) and a split-half replicate (1), so a held-out "
        "prediction that does not know the scored perturbations' mean response is expected "
        "below 0. sim_counts: simulated counts (make_perturbseq, 40 singles + 10 "
        "combinations, 9,000 cells, 500 genes, 20,000 UMI per cell), 5-fold "
        "PerturbationSplit(shuffle=True, random_state=0), mean ± std over folds, each fold "
        f"the mean over {args.count_seeds} draws of the predicted counts (random_state 0 to "
        f"{args.count_seeds - 1}: one draw moves a fold's score by ~0.03); verdicts "
        "paired over folds (win/loss beyond 2 standard errors) against the best baseline "
        f"per metric ({', '.join(BASELINE_NAMES)}). Datlinger: fold 0 of a 2-fold split; "
        "cell-eval2 refuses the reference (no measurable aggregate effect at 59 UMI per "
        "cell) for every model alike. H1: in-sample (all 5 perturbations fitted and scored; "
        "any held-out subset of 2-3 gives a degenerate baseline): it shows the pipeline, "
        "not generalisation. cell-eval2 s: summed over folds; the first model of each data "
        "set includes the baseline and the 5-split replicate anchor.\n\n" + summary,
        extra=extra,
    )


if __name__ == "__main__":
    main()
