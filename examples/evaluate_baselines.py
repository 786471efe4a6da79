"""Evaluate the baselines on held-out perturbations with the VCC metrics.

Uses the Norman 2019 K562 part of the shared devel file (read at run time)
or, when it is absent, a simulated screen. Shows the three ways to evaluate:

1. ``cross_validate`` with ``PerturbationSplit`` and the sktx scorers;
2. the metric functions on an explicit prediction (``make_query`` + ``predict``);
3. ``GridSearchCV`` over the number of selected genes (needs ``GeneSelector``).

    python examples/evaluate_baselines.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from sktx.baselines import AdditiveBaseline, ControlBaseline, LinearBaseline, MeanBaseline
from sktx.metrics import get_scorer, perturbation_metrics, vcc_score
from sktx.model_selection import PerturbationSplit, make_query

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NORMAN = DATA / "norman2019_mcfaline2023_devel.h5ad"


def load():
    if NORMAN.exists():
        from sktx.datasets import load_h5ad

        adata = load_h5ad(NORMAN, perturbation_key="perturbation", control_label="control")
        return adata[adata.obs["cell_type"] == "k562"].copy(), "perturbation", "control"
    from sktx.datasets import make_perturbseq

    return (
        make_perturbseq(n_cells=3000, n_genes=300, random_state=0),
        "target_gene",
        "non-targeting",
    )


def main() -> None:
    adata, key, ctrl = load()
    keys = {"perturbation_key": key, "control_label": ctrl}
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes")

    # 1. Cross-validation over perturbations: controls are in every fold.
    cv = PerturbationSplit(5, shuffle=True, random_state=0, **keys)
    scoring = {name: get_scorer(name) for name in ("des", "pds", "neg_mae", "pearson_delta")}
    for model in (
        ControlBaseline(**keys),
        MeanBaseline(**keys),
        AdditiveBaseline(**keys),
        # target effects from singles *and* combinations (PerturbationRegressor's start)
        AdditiveBaseline(effects="joint", **keys),
        LinearBaseline(**keys),
    ):
        res = cross_validate(model, adata, cv=cv, scoring=scoring)
        summary = ", ".join(f"{n}={np.mean(res[f'test_{n}']):.3f}" for n in scoring)
        joint = getattr(model, "effects", "") == "joint"
        name = type(model).__name__ + ("(joint)" if joint else "")
        print(f"{name:24s} {summary}")

    # 2. Metric functions on an explicit held-out prediction.
    train, test = next(cv.split(adata))
    model = AdditiveBaseline(**keys).fit(adata[train])
    # The scorer's own steps: controls relabelled with the held-out perturbations
    # (make_query), predict, then append the real control cells (cell-eval's convention).
    real, pred = get_scorer("vcc").real_and_predicted(model, adata[test])
    print("query cells:", make_query(adata[test], **keys).n_obs)
    print(perturbation_metrics(real, pred, **keys).round(3).head())
    print("VCC score vs cell-mean baseline:", round(vcc_score(real, pred, **keys), 3))

    # 3. Grid search over the number of genes (GeneSelector from sktx.selection).
    try:
        from sktx.selection import GeneSelector
    except ImportError:
        return
    pipe = Pipeline([("select", GeneSelector(**keys)), ("model", MeanBaseline(**keys))])
    search = GridSearchCV(
        pipe,
        {"select__n_genes": [200, 500]},
        cv=PerturbationSplit(3, **keys),
        scoring=get_scorer("pds"),
    )
    search.fit(adata)
    print("best:", search.best_params_, round(search.best_score_, 3))


if __name__ == "__main__":
    main()
