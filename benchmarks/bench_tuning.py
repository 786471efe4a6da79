"""How PerturbationRegressor's defaults were chosen: held-out perturbations of Datlinger 2017.

The defaults are tuned on this dataset (Jurkat, TCR-pathway CRISPR knock-outs, raw counts)
and *not* on the Norman K562 folds that ``bench_quality.py`` reports, so the K562 numbers
stay an honest test. 3-fold ``PerturbationSplit`` over the 20 perturbations, 500 highly
variable genes (scanpy ``seurat`` flavour on the log1p data), GO BP 2021 as prior.

    python benchmarks/bench_tuning.py        # ~12-18 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CV_COLUMNS,
    SHARED,
    cross_validate_models,
    peak_rss_gb,
    regressor_params,
    write_result,
)

DATLINGER = SHARED / "data" / "datlinger2017_jurkat.h5ad"
KEYS = {"perturbation_key": "target_gene", "control_label": "control"}


def models(epochs: int) -> dict:
    from sktx.baselines import AdditiveBaseline, MeanBaseline
    from sktx.regressor import PerturbationRegressor

    ours = regressor_params(KEYS, epochs)
    return {
        "MeanBaseline": MeanBaseline(**KEYS),
        "AdditiveBaseline": AdditiveBaseline(**KEYS),
        'AdditiveBaseline(cells="controls")': AdditiveBaseline(cells="controls", **KEYS),
        "PerturbationRegressor, 0 epochs": PerturbationRegressor(**{**ours, "max_epochs": 0}),
        "PerturbationRegressor (defaults)": PerturbationRegressor(**ours),
        "distributional_loss=1": PerturbationRegressor(**ours, distributional_loss=1.0),
        "early_stopping=False": PerturbationRegressor(**ours, early_stopping=False),
        "lr=3e-4": PerturbationRegressor(**{**ours, "lr": 3e-4}),
        "optimizer__weight_decay=0.01": PerturbationRegressor(**ours, optimizer__weight_decay=0.01),
        "optimizer__weight_decay=1.0": PerturbationRegressor(**ours, optimizer__weight_decay=1.0),
        "module__dropout=0.1": PerturbationRegressor(**ours, module__dropout=0.1),
        "module__dropout=0.3": PerturbationRegressor(**ours, module__dropout=0.3),
        "module__id_dropout=0.5": PerturbationRegressor(**ours, module__id_dropout=0.5),
        "d_model=32": PerturbationRegressor(**{**ours, "d_model": 32}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    import scanpy as sc

    from sktx.datasets import load_h5ad
    from sktx.model_selection import PerturbationSplit

    adata = load_h5ad(DATLINGER, **KEYS)  # log1p-normalised on load, counts kept
    sc.pp.highly_variable_genes(adata, n_top_genes=500)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    cv = PerturbationSplit(args.folds, shuffle=True, random_state=0, **KEYS)
    extra = {"folds": args.folds, "epochs": args.epochs}
    rows = cross_validate_models(models(args.epochs), adata, cv, extra)
    extra["peak_rss_gb"] = peak_rss_gb()
    notes = (
        f"Datlinger 2017 Jurkat (shared file, 20 perturbations, 200 controls, very shallow "
        f"counts), 500 HVGs; {args.folds}-fold `PerturbationSplit(shuffle=True, "
        "random_state=0)`, mean ± std over folds; same scorers as `bench_quality.py`. "
        "This is the tuning set (the Norman K562 test folds were not used to choose "
        "defaults): distributional_loss=0, lr=1e-3 and weight_decay=0.1 are the best of "
        "their rows. Early stopping stays on although switching it off scored higher here "
        "(within the spread over folds): on Norman K562 *training* perturbations the "
        "validation loss turns up after 4-7 epochs, and 20 epochs without it overfit there. "
        "Dropout (0 by default), the target-identity dropout (0.25) and d_model (64) did "
        "not beat the defaults either. Rows below the defaults change one parameter each."
    )
    path = write_result(
        "tuning",
        title="Choosing the regressor's defaults on held-out Datlinger 2017 perturbations",
        columns=CV_COLUMNS,
        rows=rows,
        notes=notes,
        extra=extra,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
