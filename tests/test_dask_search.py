"""GridSearchCV through joblib's dask backend gives the same result as the serial run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sktx.baselines import MeanBaseline
from sktx.metrics import pearson_delta_scorer
from sktx.model_selection import PerturbationSplit
from sktx.selection import GeneSelector

distributed = pytest.importorskip("dask.distributed", reason="dask.distributed not installed")


def _search(n_jobs):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    pipe = Pipeline([("select", GeneSelector()), ("model", MeanBaseline())])
    return GridSearchCV(
        pipe,
        {"select__n_genes": [10, 40, 120]},
        cv=PerturbationSplit(3),
        scoring=pearson_delta_scorer,
        error_score="raise",
        n_jobs=n_jobs,
    )


def test_dask_search_matches_serial(sim):
    import joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = _search(None).fit(sim)
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
                dist = _search(-1).fit(sim)
    # The fits really ran on the dask workers.
    workers = {task["worker"] for task in stream.data}
    assert len(stream.data) > 0 and len(workers) >= 1
    assert dist.best_params_ == serial.best_params_
    np.testing.assert_allclose(
        dist.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"], rtol=1e-6
    )
