"""PerturbationSplit and make_query; cross_validate / GridSearchCV on AnnData."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from sktx.baselines import AdditiveBaseline, LinearBaseline, MeanBaseline
from sktx.data import DataContractError
from sktx.datasets import make_perturbseq
from sktx.metrics import get_scorer, pds_scorer, pearson_delta_scorer
from sktx.model_selection import PerturbationSplit, make_query

CTRL = "non-targeting"
NORMAN = {"perturbation_key": "perturbation", "control_label": "control"}


def _labels(adata, key="target_gene"):
    return adata.obs[key].astype(str).to_numpy()


def test_each_perturbation_tested_once_controls_everywhere(sim):
    labels = _labels(sim)
    ctrl = set(np.flatnonzero(labels == CTRL))
    cv = PerturbationSplit(4)
    assert cv.get_n_splits(sim) == 4
    seen = []
    for train, test in cv.split(sim):
        assert ctrl <= set(train) and ctrl <= set(test)
        held = set(labels[test]) - {CTRL}
        assert held and not held & set(labels[train])
        assert len(set(train) | set(test)) == sim.n_obs
        seen.extend(held)
    assert sorted(seen) == sorted(set(labels) - {CTRL})


def test_shuffle_is_reproducible(sim):
    def folds(**kw):
        return [tuple(test) for _, test in PerturbationSplit(3, **kw).split(sim)]

    assert folds() == folds()
    assert folds(shuffle=True, random_state=1) == folds(shuffle=True, random_state=1)
    assert folds(shuffle=True, random_state=1) != folds()


def test_split_errors(sim):
    with pytest.raises(ValueError, match="exceeds the number of perturbations"):
        next(PerturbationSplit(100).split(sim))
    with pytest.raises(ValueError, match="n_splits"):
        next(PerturbationSplit(1).split(sim))
    with pytest.raises(DataContractError, match="perturbation_key"):
        next(PerturbationSplit(2, perturbation_key="guide").split(sim))
    with pytest.raises(DataContractError, match="control_label"):
        next(PerturbationSplit(2, control_label="ctrl").split(sim))
    with pytest.raises(TypeError, match="AnnData"):
        next(PerturbationSplit(2).split(np.zeros((4, 2))))


def test_make_query_mirrors_real_cells():
    adata = make_perturbseq(
        n_cells=500,
        n_genes=30,
        n_perturbations=3,
        n_combinations=1,
        n_cell_types=2,
        random_state=0,
    )
    query = make_query(adata, cell_type_key="cell_type", random_state=0)
    real = adata[adata.obs["target_gene"] != CTRL]
    pairs = ["target_gene", "cell_type"]
    expected = real.obs[pairs].astype(str).value_counts().to_dict()
    assert query.obs[pairs].astype(str).value_counts().to_dict() == expected
    # Every query cell is a copy of a control cell of its own cell type.
    src = adata[query.obs["control_cell"].to_numpy()]
    assert (src.obs["target_gene"] == CTRL).all()
    assert (src.obs["cell_type"].to_numpy() == query.obs["cell_type"].to_numpy()).all()
    assert sp.issparse(query.X)
    np.testing.assert_array_equal(query.X.toarray(), src.X.toarray())
    again = make_query(adata, cell_type_key="cell_type", random_state=0)
    assert list(again.obs["control_cell"]) == list(query.obs["control_cell"])
    assert set(adata.obs["target_gene"]) >= {"non-targeting"}  # input untouched


def test_make_query_for_new_perturbations(sim):
    query = make_query(sim, perturbations=["NEW1", "NEW1+NEW2"], n_cells=7)
    assert query.n_obs == 14
    assert set(query.obs["target_gene"]) == {"NEW1", "NEW1+NEW2"}
    ctrl_only = sim[sim.obs["target_gene"] == CTRL]
    assert make_query(ctrl_only, perturbations=["X"]).n_obs == ctrl_only.n_obs


def test_cross_validate_on_anndata(sim):
    scoring = {name: get_scorer(name) for name in ("des", "pds", "neg_mae", "vcc")}
    result = cross_validate(
        AdditiveBaseline(), sim, cv=PerturbationSplit(3), scoring=scoring, error_score="raise"
    )
    assert result["test_pds"].shape == (3,)
    assert np.all(result["test_neg_mae"] < 0)
    assert np.all((result["test_vcc"] >= 0) & (result["test_vcc"] <= 1))


def test_grid_search_on_anndata(sim):
    search = GridSearchCV(
        LinearBaseline(),
        {"n_components": [1, 3]},
        cv=PerturbationSplit(3),
        scoring=pearson_delta_scorer,
        error_score="raise",
    ).fit(sim)
    assert search.best_params_["n_components"] in (1, 3)
    assert search.best_estimator_.gene_embedding_.shape[1] == search.best_params_["n_components"]


def test_grid_search_gene_selector_on_norman(norman):
    selection = pytest.importorskip("sktx.selection", reason="GeneSelector not available yet")
    keys = {**NORMAN, "cell_type_key": "cell_type"}
    pipe = Pipeline([("select", selection.GeneSelector(**keys)), ("model", MeanBaseline(**keys))])
    search = GridSearchCV(
        pipe,
        {"select__n_genes": [200, 500, 1000]},
        cv=PerturbationSplit(3, **NORMAN),
        scoring=pds_scorer,
        error_score="raise",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(norman)
    assert any("1000" in str(w.message) for w in caught)  # more genes asked than exist
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores > 0) & (scores <= 1))
    assert search.best_params_["select__n_genes"] in (200, 500, 1000)
    best = search.best_estimator_
    query = make_query(norman, **keys)
    assert best.predict(query).n_vars == min(best.named_steps["select"].n_genes, norman.n_vars)


@pytest.mark.slow
def test_grid_search_gene_selector_regressor_on_norman(norman, genesets_dir):
    selection = pytest.importorskip("sktx.selection", reason="GeneSelector not available yet")
    regressor = pytest.importorskip("sktx.regressor", reason="PerturbationRegressor not available")
    keys = {**NORMAN, "cell_type_key": "cell_type"}
    # IER5L is neither measured nor in GO BP: the regressor has no embedding for it.
    k562 = norman[(norman.obs["cell_type"] == "k562") & (norman.obs["perturbation"] != "IER5L")]
    model = regressor.PerturbationRegressor(
        **keys,
        gene_sets=str(genesets_dir / "go_bp_2021.gmt"),
        d_model=16,
        n_layers=1,
        max_epochs=2,
        random_state=0,
    )
    pipe = Pipeline([("select", selection.GeneSelector(**keys)), ("model", model)])
    search = GridSearchCV(
        pipe,
        {"select__n_genes": [200, 500, 1000]},
        cv=PerturbationSplit(3, **NORMAN),
        scoring=pearson_delta_scorer,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(k562)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(np.abs(scores) <= 1)
