"""No estimator modifies the caller's AnnData: X, obs, var, uns and layers hash the same
before and after fit / transform / predict / score."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

from sktx.baselines import AdditiveBaseline, ControlBaseline, LinearBaseline, MeanBaseline
from sktx.datasets import make_perturbseq
from sktx.model_selection import PerturbationSplit, make_query
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def _matrix_bytes(X) -> bytes:
    if sp.issparse(X):
        X = X.tocsr()
        parts = (X.data, X.indices, X.indptr, np.asarray(X.shape))
        return b"".join(np.ascontiguousarray(p).tobytes() for p in parts) + str(X.dtype).encode()
    X = np.asarray(X)
    return np.ascontiguousarray(X).tobytes() + str(X.dtype).encode() + str(X.shape).encode()


def fingerprint(adata) -> dict[str, str]:
    """sha256 of every part of an AnnData the user owns."""
    h = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    out = {"X": h(_matrix_bytes(adata.X))}
    for part in ("obs", "var"):
        df = getattr(adata, part)
        out[part] = h(pickle.dumps((df.index.tolist(), df.columns.tolist(), df.dtypes.tolist())))
        out[part + "_values"] = h(pickle.dumps(df.to_dict("list")))
    out["uns"] = h(pickle.dumps(sorted(adata.uns.keys())) + pickle.dumps(dict(adata.uns)))
    out["layers"] = h(
        b"".join(k.encode() + _matrix_bytes(adata.layers[k]) for k in sorted(adata.layers))
    )
    out["obsm"] = h(pickle.dumps(sorted(adata.obsm.keys())))
    return out


@pytest.fixture(params=["sparse", "dense"])
def data(request):
    a = make_perturbseq(n_cells=400, n_genes=80, n_perturbations=6, random_state=3)
    a.layers["counts"] = a.X.copy()
    a.uns["note"] = {"kept": [1, 2]}
    if request.param == "dense":
        a.X = a.X.toarray()
    return a


def _regressor():
    return PerturbationRegressor(**SMALL, max_epochs=1, random_state=0)


ESTIMATORS = {
    "ControlBaseline": ControlBaseline,
    "MeanBaseline": MeanBaseline,
    "AdditiveBaseline": AdditiveBaseline,
    "LinearBaseline": LinearBaseline,
    "PerturbationRegressor": _regressor,
    "Pipeline": lambda: Pipeline(
        [("select", GeneSelector(n_genes=40, random_state=0)), ("model", _regressor())]
    ),
    "ProgressiveFit": lambda: ProgressiveFit(
        Pipeline([("select", GeneSelector()), ("model", _regressor())]),
        phases=(30, 60),
        epochs_per_phase=1,
        random_state=0,
    ),
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_predict_score_leave_inputs_alone(name, data):
    query = make_query(data)
    before, qbefore = fingerprint(data), fingerprint(query)
    est = ESTIMATORS[name]().fit(data)
    assert fingerprint(data) == before, "fit"
    est.predict(query)
    assert fingerprint(query) == qbefore, "predict"
    if hasattr(est, "score"):
        try:
            est.score(data)
        except (TypeError, NotImplementedError):
            pass  # score is optional; the point is that it must not write
    assert fingerprint(data) == before, "score"


def test_gene_selector_leaves_inputs_alone(data):
    before = fingerprint(data)
    sel = GeneSelector(n_genes=30, random_state=0).fit(data)
    assert fingerprint(data) == before
    out = sel.transform(data)
    assert fingerprint(data) == before
    # the output is a new object: writing to it must not reach the input
    out.obs["new"] = 1
    out.uns["new"] = 1
    assert fingerprint(data) == before


def test_splitter_and_make_query_leave_inputs_alone(data):
    before = fingerprint(data)
    list(PerturbationSplit(n_splits=2, random_state=0).split(data))
    make_query(data)
    assert fingerprint(data) == before


def test_layer_input_untouched(data):
    """Fitting from a layer (counts) must not normalise that layer in place."""
    before = fingerprint(data)
    query = make_query(data)
    query.layers["counts"] = query.X.copy()
    qbefore = fingerprint(query)
    _regressor().set_params(layer="counts").fit(data).predict(query)
    assert fingerprint(query) == qbefore
    GeneSelector(n_genes=30, layer="counts", random_state=0).fit_transform(data)
    assert fingerprint(data) == before
