"""Column names given once: keys left at their defaults are read from ``uns['sktx']``."""

from __future__ import annotations

import numpy as np
import pytest

from sktx.data import DataContractError, prepare
from sktx.data._object import resolve_keys
from sktx.model_selection import PerturbationSplit, make_query

KEYS = {"perturbation_key": "perturbation", "control_label": "control", "cell_type_key": "cell"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A screen with non-default column names, read with load_h5ad (which records them)."""
    from sktx.datasets import load_h5ad, make_perturbseq

    adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=6, random_state=0)
    adata.obs["perturbation"] = (
        adata.obs.pop("target_gene").astype(str).replace({"non-targeting": "control"})
    )
    adata.obs["cell"] = np.where(np.arange(adata.n_obs) % 2, "K562", "RPE1")
    path = tmp_path_factory.mktemp("keys") / "screen.h5ad"
    adata.write_h5ad(path)
    return load_h5ad(path, **KEYS)


def test_resolve_keys_reads_the_record_for_defaults_only(recorded):
    assert resolve_keys(recorded) == KEYS
    given = resolve_keys(recorded, control_label="ctrl")
    assert given["control_label"] == "ctrl" and given["perturbation_key"] == "perturbation"


def test_prepare_uses_recorded_keys(recorded):
    data = prepare(recorded)
    assert (data.perturbation_key, data.control_label, data.cell_type_key) == tuple(KEYS.values())
    assert data.is_control.sum() == (recorded.obs["perturbation"] == "control").sum()
    # the PerturbationData passes through estimators left at their defaults
    assert prepare(data) is data
    with pytest.raises(DataContractError, match="prepared with `control_label='control'`"):
        prepare(data, control_label="ctrl")


def test_split_accepts_every_key_and_reads_the_record(recorded):
    cv = PerturbationSplit(3, **KEYS)
    assert cv.cell_type_key == "cell" and "cell_type_key" in repr(cv)
    train, test = next(PerturbationSplit(3).split(recorded))
    is_ctrl = (recorded.obs["perturbation"] == "control").to_numpy()
    assert set(np.flatnonzero(is_ctrl)) <= set(train) & set(test)
    assert [t.tolist() for _, t in cv.split(recorded)] == [
        t.tolist() for _, t in PerturbationSplit(3).split(recorded)
    ]


def test_make_query_reads_the_record_and_carries_it(recorded):
    query = make_query(recorded, perturbations=["G00002"], n_cells=5)
    # one set of 5 per cell type, drawn from that type's controls
    assert query.obs.groupby("cell", observed=True).size().to_dict() == {"K562": 5, "RPE1": 5}
    assert set(query.obs["perturbation"]) == {"G00002"}
    assert query.uns["sktx"]["perturbation_key"] == "perturbation"


def test_make_query_per_perturbation_counts(sim):
    labels = sorted(set(sim.obs["target_gene"].astype(str)) - {"non-targeting"})[:2]
    wanted = {labels[0]: 3, labels[1]: 7}
    query = make_query(sim, n_cells=wanted)
    assert query.obs["target_gene"].value_counts().to_dict() == {labels[1]: 7, labels[0]: 3}
    import pandas as pd

    same = make_query(sim, n_cells=pd.Series(wanted), perturbations=labels)
    assert same.obs["target_gene"].tolist() == query.obs["target_gene"].tolist()
    with pytest.raises(ValueError, match="no count for"):
        make_query(sim, n_cells={labels[0]: 3}, perturbations=labels)
    with pytest.raises(ValueError, match="positive integers"):
        make_query(sim, n_cells={labels[0]: 0})
    with pytest.raises(TypeError, match="`n_cells` must be"):
        make_query(sim, n_cells="10")


def test_estimators_and_pipeline_read_recorded_keys(recorded):

    from sktx.baselines import BASELINES

    train_idx, test_idx = next(PerturbationSplit(3, shuffle=True, random_state=0).split(recorded))
    train, test = recorded[train_idx].copy(), recorded[test_idx].copy()
    query = make_query(test)
    explicit = make_query(test, **KEYS)
    assert query.obs_names.tolist() == explicit.obs_names.tolist()
    for name, factory in BASELINES.items():
        default = factory().fit(train).predict(query)
        given = factory(**KEYS).fit(train).predict(query)
        np.testing.assert_allclose(default.X, given.X, err_msg=name)


@pytest.mark.slow
def test_pipeline_reads_recorded_keys(recorded):
    from sklearn.pipeline import Pipeline

    from sktx.regressor import PerturbationRegressor
    from sktx.selection import GeneSelector

    train_idx, test_idx = next(PerturbationSplit(3, shuffle=True, random_state=0).split(recorded))
    train, query = recorded[train_idx].copy(), make_query(recorded[test_idx].copy())
    pipe = Pipeline(
        [
            ("select", GeneSelector(n_genes=30, random_state=0)),
            ("model", PerturbationRegressor(max_epochs=1, set_size=8, random_state=0)),
        ]
    ).fit(train)
    assert pipe.predict(query).n_obs == query.n_obs


def test_cli_reads_the_recorded_keys(tmp_path):
    import anndata as ad

    from sktx.cli._io import _keys_for

    adata = ad.AnnData(np.ones((4, 2), dtype=np.float32))
    adata.obs["cond"] = ["ctl", "A", "ctl", "B"]
    adata.obs["line"] = "K562"
    adata.uns["sktx"] = {
        "perturbation_key": "cond",
        "control_label": "ctl",
        "cell_type_key": "line",
    }
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    keys = _keys_for(str(path), None, None, None)
    assert (keys.perturbation_key, keys.control_label, keys.cell_type_key) == (
        "cond",
        "ctl",
        "line",
    )
    assert _keys_for(str(path), None, "other", None).control_label == "other"  # a flag wins
