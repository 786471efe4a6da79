"""predict_perturbations: a list of perturbations in, an AnnData for scanpy out."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

import sktx


def _perts(adata, n=2):
    labels = set(adata.obs["target_gene"].astype(str)) - {"non-targeting"}
    return sorted(p for p in labels if "+" not in p)[:n]


def test_function_on_a_pipeline_keeps_var_annotations(sim):
    adata = sim.copy()
    adata.var["gene_ids"] = [f"ENSG{i:05d}" for i in range(adata.n_vars)]
    pipe = Pipeline(
        [("select", sktx.GeneSelector(n_genes=40, random_state=0)), ("model", sktx.MeanBaseline())]
    ).fit(adata)
    a, b = _perts(adata)
    pred = sktx.predict_perturbations(pipe, adata, [a, f"{a}+{b}"], n_cells={a: 4, f"{a}+{b}": 6})
    assert pred.n_vars == 40
    assert pred.var["gene_ids"].tolist() == adata.var.loc[pred.var_names, "gene_ids"].tolist()
    assert pred.obs["target_gene"].value_counts().to_dict() == {f"{a}+{b}": 6, a: 4}
    assert str(pred.obs["target_gene"].dtype) == "category"
    assert pred.obs["control_cell"].isin(adata.obs_names).all()
    assert pred.uns["sktx"]["perturbation_key"] == "target_gene"


def test_with_controls_and_methods_agree(sim):
    model = sktx.AdditiveBaseline().fit(sim)
    perts = _perts(sim)
    n_ctrl = int((sim.obs["target_gene"] == "non-targeting").sum())
    pred = model.predict_perturbations(sim, perts, n_cells=3, with_controls=True)
    assert (pred.obs["target_gene"] == "non-targeting").sum() == n_ctrl
    again = sktx.predict_perturbations(model, sim, perts, n_cells=3, with_controls=True)
    np.testing.assert_array_equal(pred.X, again.X)
    # control cells come back as they were (log1p)
    ctrl = pred[pred.obs["target_gene"] == "non-targeting"]
    real = sktx.prepare(sim)
    rows = real.obs_names.get_indexer(ctrl.obs["control_cell"])
    np.testing.assert_allclose(ctrl.X, real.X[rows].toarray(), rtol=1e-5)


def test_scanpy_reads_the_prediction(sim):
    sc = pytest.importorskip("scanpy")
    model = sktx.MeanBaseline().fit(sim)
    pred = sktx.predict_perturbations(model, sim, _perts(sim, 3), n_cells=10, with_controls=True)
    sc.tl.rank_genes_groups(pred, "target_gene", reference="non-targeting", method="t-test")
    assert "rank_genes_groups" in pred.uns


@pytest.mark.slow
def test_regressor_and_progressive_method():
    from sktx.datasets import make_perturbseq

    sim = make_perturbseq(n_cells=200, n_genes=40, n_perturbations=4, random_state=0)
    reg = sktx.PerturbationRegressor(max_epochs=1, set_size=8, random_state=0).fit(sim)
    assert repr(reg) == "PerturbationRegressor(max_epochs=1, set_size=8, random_state=0)"
    pred = reg.predict_perturbations(sim, _perts(sim), n_cells=2)
    assert pred.n_obs == 4 and pred.n_vars == sim.n_vars
    prog = sktx.ProgressiveFit(
        Pipeline(
            [
                ("select", sktx.GeneSelector(random_state=0)),
                ("model", sktx.PerturbationRegressor(set_size=8, random_state=0)),
            ]
        ),
        phases=(20, 40),
        epochs_per_phase=1,
        random_state=0,
    ).fit(sim)
    assert prog.predict_perturbations(sim, _perts(sim), n_cells=2).n_vars == 40


def test_bad_arguments(sim):
    model = sktx.MeanBaseline().fit(sim)
    with pytest.raises(TypeError, match="unexpected keyword"):
        sktx.predict_perturbations(model, sim, _perts(sim), perturbation_col="x")
    with pytest.raises(ValueError, match="`output`"):
        sktx.predict_perturbations(model, sim, _perts(sim), output="raw")
