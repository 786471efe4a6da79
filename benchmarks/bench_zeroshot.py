"""Zero-shot to a new cell line: leave one cell line out on the Norman/McFaline file.

The file holds four cell lines (``cell_type``: K562 from Norman 2019, CRISPRa; A172,
T98G, U87MG from McFaline-Figueroa 2024, CRISPRi). The 9 McFaline targets were
screened in all four. Each fold fits every model on the control cells and those 9
perturbations of three lines and predicts the 9 perturbations of the fourth from its
control cells only (``make_query`` of the held-out line); ``sktx.metrics`` (the 2025
VCC metrics, cell-eval definitions) score the prediction against the held-out line's
real cells. Every model warns (``UnseenContextWarning``) on every fold; the script
records that it did.

    python benchmarks/bench_zeroshot.py     # ~3-6 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, KEYS, peak_rss_gb, regressor_params, write_result

CT = "cell_type"
COLUMNS = ["held-out line", "model", "DES", "PDS", "MAE", "VCC score", "warned", "wall s"]


def shared_perturbations(adata) -> list[str]:
    """Perturbations screened in every cell line of the file."""
    import pandas as pd

    counts = pd.crosstab(adata.obs[KEYS["perturbation_key"]], adata.obs[CT])
    keep = counts.index[(counts > 0).all(axis=1)]
    return sorted(p for p in keep if p != KEYS["control_label"])


def models(epochs: int) -> dict:
    """name -> (estimator factory, options of the transfer rule or None)."""
    from sktx.baselines import AdditiveBaseline, ControlBaseline, MeanBaseline
    from sktx.regressor import PerturbationRegressor

    keys = {**KEYS, "cell_type_key": CT}
    ours = {**regressor_params(KEYS, epochs), "cell_type_key": CT}
    return {
        "ControlBaseline (no change)": (lambda: ControlBaseline(**keys), None),
        "MeanBaseline (mean response of the fitted lines)": (lambda: MeanBaseline(**keys), None),
        "AdditiveBaseline (same delta as in the fitted lines)": (
            lambda: AdditiveBaseline(**keys),
            None,
        ),
        'AdditiveBaseline(cells="controls")': (
            lambda: AdditiveBaseline(cells="controls", **keys),
            None,
        ),
        "transfer, not shrunk (regressor, 0 epochs, shrink=False)": (
            lambda: PerturbationRegressor(**{**ours, "max_epochs": 0}),
            {"shrink": False},
        ),
        "transfer, log-fold change pseudocount 0.1 (0 epochs)": (
            lambda: PerturbationRegressor(**{**ours, "max_epochs": 0}),
            {"pseudocount": 0.1},
        ),
        "transfer, default (regressor, 0 epochs = its baseline)": (
            lambda: PerturbationRegressor(**{**ours, "max_epochs": 0}),
            {},
        ),
        f"PerturbationRegressor, <= {epochs} epochs (default)": (
            lambda: PerturbationRegressor(**ours),
            {},
        ),
    }


def score_fold(model, test) -> dict:
    """DES, PDS, MAE and the VCC score of ``model`` on the held-out line ``test``."""
    from sktx.context import UnseenContextWarning
    from sktx.metrics import PerturbationScorer, vcc_score

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        real, pred = PerturbationScorer("vcc").real_and_predicted(model, test)
    warned = any(issubclass(w.category, UnseenContextWarning) for w in caught)
    keys = {**KEYS, "cell_type_key": CT}
    score, parts = vcc_score(real, pred, return_components=True, **keys)
    user = parts["user"]
    return {"DES": user["des"], "PDS": user["pds"], "MAE": user["mae"], "VCC": score}, warned


def verdict(per_fold: dict, ours: str, others: list[str]) -> str:
    """Folds won / tied / lost by ``ours`` against each of ``others``, per metric."""
    parts = []
    for other in others:
        counts = []
        for metric, sign in (("MAE", -1), ("PDS", 1), ("DES", 1), ("VCC", 1)):
            diff = [
                sign * (round(a[metric], 4) - round(b[metric], 4))
                for a, b in zip(per_fold[ours], per_fold[other], strict=True)
            ]
            won, lost = sum(d > 0 for d in diff), sum(d < 0 for d in diff)
            counts.append(f"{metric} {won}/{len(diff) - won - lost}/{lost}")
        parts.append(f"vs {other.split(' (')[0]}: " + ", ".join(counts))
    return f"{ours} (folds won/tied/lost, 4-decimal values) " + "; ".join(parts) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    import anndata as ad

    import sktx.regressor._context as ctx_module

    adata = ad.read_h5ad(DATA)
    perts = shared_perturbations(adata)
    keep = adata.obs[KEYS["perturbation_key"]].isin([*perts, KEYS["control_label"]])
    adata = adata[keep.to_numpy()].copy()
    lines = sorted(adata.obs[CT].unique())
    print("perturbations in every line:", perts, "lines:", lines, flush=True)

    rows, per_fold, coefs = [], {}, {}
    original = ctx_module.fit_context_transfer
    for name, (make, options) in models(args.epochs).items():
        vals = []
        for line in lines:
            is_test = (adata.obs[CT] == line).to_numpy()
            train, test = adata[~is_test].copy(), adata[is_test].copy()
            # the 0-epoch variants run the regressor's transfer rule with other options
            ctx_module.fit_context_transfer = (
                functools.partial(original, **options) if options else original
            )
            try:
                t0 = time.perf_counter()
                model = make().fit(train)
                metrics, warned = score_fold(model, test)
                wall = time.perf_counter() - t0
                if options == {}:
                    tr = ctx_module.transfer(model, model.fitted_state_)
                    coefs[line] = [round(float(c), 4) for c in tr.coef]
            finally:
                ctx_module.fit_context_transfer = original
            vals.append(metrics)
            row = [line, name, *(round(metrics[k], 4) for k in ("DES", "PDS", "MAE", "VCC"))]
            rows.append([*row, warned, round(wall, 1)])
            print(rows[-1], flush=True)
        mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
        per_fold[name] = vals
        rows.append(["mean of 4", name, *(round(mean[k], 4) for k in ("DES", "PDS", "MAE", "VCC"))])
        rows[-1] += ["", ""]
        print(rows[-1], flush=True)

    summary = [r for r in rows if r[0] == "mean of 4"]
    others = [r for r in rows if r[0] != "mean of 4"]
    notes = (
        "Leave one cell line out on the Norman/McFaline devel file (500 HVGs): fit on the "
        f"controls and the {len(perts)} perturbations screened in every line "
        f"({', '.join(perts)}) of three lines, predict those of the fourth from its 100 "
        "control cells (`make_query`, one query cell per real perturbed cell), score with "
        "`sktx.metrics` (DES = overlap_at_N, PDS = discrimination_score_l1, MAE of "
        "pseudobulk log1p; VCC score = the three scaled against the cell-mean baseline of "
        "the held-out line's real cells, 0 = no better). 'warned' = the model raised "
        "`UnseenContextWarning`. 'transfer' rows are the regressor with 0 epochs, i.e. "
        "exactly `sktx.context.fit_context_transfer` on the fitted deltas (options in the "
        "row name; default: pseudocount 1 = log1p deltas, mean-response and specific "
        "weights fitted by leave-one-line-out least squares). Fitted weights (mean "
        f"response, specific) of the default per held-out line: {coefs}. Regressor: "
        f"GO BP 2021 prior, <= {args.epochs} epochs with early stopping, CPU, 1 thread, "
        "random_state=0. "
        + verdict(
            per_fold,
            f"PerturbationRegressor, <= {args.epochs} epochs (default)",
            [n for n in per_fold if "Baseline" in n and "cells=" not in n],
        )
    )
    path = write_result(
        "zeroshot",
        title="Zero-shot to a held-out cell line (Norman/McFaline, leave one line out)",
        columns=COLUMNS,
        rows=summary + others,
        notes=notes,
        extra={
            "perturbations": perts,
            "per_fold": per_fold,
            "coef": coefs,
            "peak_rss_gb": round(peak_rss_gb(), 2),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
