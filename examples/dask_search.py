"""Distributed GridSearchCV over gene-panel sizes on a local dask cluster.

Every (candidate, fold) fit is sent to a dask worker through joblib's dask
backend; the same code runs on a multi-node cluster by pointing ``Client`` at
its scheduler address instead of a ``LocalCluster``.

Run with ``python examples/dask_search.py``.
"""

from __future__ import annotations

import warnings

import joblib
from dask.distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sktx.baselines import MeanBaseline
from sktx.datasets import make_perturbseq
from sktx.metrics import pearson_delta_scorer
from sktx.model_selection import PerturbationSplit
from sktx.selection import GeneSelector


def make_search() -> GridSearchCV:
    """Return the grid search over the number of selected genes."""
    pipe = Pipeline([("select", GeneSelector()), ("model", MeanBaseline())])
    return GridSearchCV(
        pipe,
        {"select__n_genes": [20, 60, 120]},
        cv=PerturbationSplit(3),
        scoring=pearson_delta_scorer,
        error_score="raise",
        n_jobs=-1,
    )


def main() -> None:
    adata = make_perturbseq(n_cells=600, n_genes=120, n_perturbations=8, random_state=0)
    # Loopback only: the scheduler and the 2 worker processes stay on this machine.
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        with joblib.parallel_backend("dask"):
            search = make_search().fit(adata)
    print("best params:", search.best_params_, "score:", round(search.best_score_, 4))


if __name__ == "__main__":
    main()
