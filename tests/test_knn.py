"""KNNBaseline: known answers on hand-built screens, registry, real data."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from sktx.baselines import BASELINES, AdditiveBaseline, KNNBaseline
from sktx.model_selection import make_query

CTRL = "non-targeting"
GENES = ["A", "B", "C", "X", "Y"]
# exact per-label deltas on the five genes (every cell of a label is identical)
DELTAS = {
    "A": [0.4, 0.0, 0.0, 0.2, 0.0],
    "B": [0.0, 0.8, 0.0, 0.0, 0.4],
    "C": [0.0, 0.0, 1.2, 0.6, 0.6],
}
BASE = np.array([1.5, 1.5, 1.5, 1.5, 1.5])


def _screen(deltas=DELTAS, n=4, controls=None) -> ad.AnnData:
    """log1p cells: controls at BASE (or ``controls``), each label at BASE + its delta."""
    ctrl = np.tile(BASE, (n, 1)) if controls is None else np.asarray(controls, float)
    rows, labels = [ctrl], [CTRL] * len(ctrl)
    for label, d in deltas.items():
        rows.append(np.tile(ctrl.mean(0) + np.asarray(d), (n, 1)))
        labels += [label] * n
    X = np.vstack(rows)
    obs = pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(X))])
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=GENES))


def _predict(model, label: str, adata) -> np.ndarray:
    query = make_query(adata, perturbations=[label], n_cells=2)
    ctrl = np.asarray(adata.X)[(adata.obs["target_gene"] == CTRL).to_numpy()].mean(0)
    return np.asarray(model.predict(query).X)[0] - ctrl


SETS = {"s1": ["A", "X"], "s2": ["B", "X", "Y"], "s3": ["C"], "s4": ["Z", "W"]}


def test_jaccard_neighbours_and_weighted_mean():
    adata = _screen()
    model = KNNBaseline(gene_sets=SETS, coexpression_weight=0, effects="singles").fit(adata)
    # X is in s1 and s2: Jaccard 1/2 with A ({s1}), 1/2 with B ({s2}), 0 with C
    assert model.neighbors("X").to_dict() == {"A": 0.5, "B": 0.5}
    expected = 0.5 * np.array(DELTAS["A"]) + 0.5 * np.array(DELTAS["B"])
    np.testing.assert_allclose(_predict(model, "X", adata), expected, atol=1e-12)
    # Y is in s2 only: Jaccard 1 with B -> B's effect
    np.testing.assert_allclose(_predict(model, "Y", adata), DELTAS["B"], atol=1e-12)
    # one neighbour: ties keep the fitted order (A before B)
    one = clone(model).set_params(n_neighbors=1).fit(adata)
    assert one.neighbors("X").to_dict() == {"A": 1.0}


def test_no_neighbour_falls_back_to_the_mean_effect():
    adata = _screen()
    model = KNNBaseline(gene_sets=SETS, coexpression_weight=0, effects="singles").fit(adata)
    mean = np.mean([DELTAS[k] for k in DELTAS], axis=0)
    # Z shares a set only with an unfitted gene; Q is in no set at all
    for target in ("Z", "Q"):
        assert model.neighbors(target).empty
        np.testing.assert_allclose(_predict(model, target, adata), mean, atol=1e-12)
    np.testing.assert_allclose(model.mean_effect_.iloc[0], mean)


def test_seen_labels_and_additive_combinations():
    adata = _screen()
    model = KNNBaseline(gene_sets=SETS, coexpression_weight=0, effects="singles").fit(adata)
    np.testing.assert_allclose(_predict(model, "C", adata), DELTAS["C"], atol=1e-12)
    x = 0.5 * np.array(DELTAS["A"]) + 0.5 * np.array(DELTAS["B"])
    np.testing.assert_allclose(_predict(model, "C+X", adata), np.array(DELTAS["C"]) + x, atol=1e-12)
    np.testing.assert_allclose(
        _predict(model, "A+B", adata), np.add(DELTAS["A"], DELTAS["B"]), atol=1e-12
    )


def test_coexpression_of_measured_targets():
    # controls where X follows A exactly, is the mirror of B and uncorrelated with C
    a = np.array([1.5, 2.5, 1.5, 2.5])
    c = np.array([1.5, 1.5, 2.5, 2.5])
    controls = np.column_stack([a, 4.0 - a, c, a, np.full(4, 1.5)])
    adata = _screen(controls=controls)
    model = KNNBaseline(gene_sets=False, coexpression_weight=1.0, effects="singles").fit(adata)
    corr = model.coexpression_[""]
    np.testing.assert_allclose(corr.loc["X", ["A", "B", "C"]], [1.0, -1.0, 0.0], atol=1e-12)
    assert model.neighbors("X").to_dict() == {"A": 1.0}
    np.testing.assert_allclose(_predict(model, "X", adata)[:3], DELTAS["A"][:3], atol=1e-12)
    # Y is constant in the controls: no correlation, no gene sets -> mean effect
    assert model.neighbors("Y").empty
    # half and half: X gets 0.5 * (1/2 Jaccard) + 0.5 * 1 for A, 0.5 * 1/2 for B
    mixed = KNNBaseline(gene_sets=SETS, coexpression_weight=0.5, effects="singles").fit(adata)
    w = mixed.neighbors("X")
    np.testing.assert_allclose(w[["A", "B"]].to_numpy(), [0.75 / 1.0, 0.25 / 1.0])


def test_joint_effects_match_the_joint_additive_baseline():
    # targets seen only in combinations are fitted targets with effects="joint"
    deltas = {**DELTAS, "A+Y": np.add(DELTAS["A"], [0.0, 0.0, 0.0, 0.0, 0.5]).tolist()}
    adata = _screen(deltas)
    knn = KNNBaseline(gene_sets=SETS, coexpression_weight=0).fit(adata)
    joint = AdditiveBaseline(effects="joint").fit(adata)
    assert "Y" in knn.target_effects_[""].index
    for label in ("Y", "B+Y", "C"):
        np.testing.assert_allclose(
            _predict(knn, label, adata), _predict(joint, label, adata), atol=1e-10
        )
    # an unknown target without neighbours gets the typical (shared) effect, as joint does
    np.testing.assert_allclose(_predict(knn, "Q", adata), _predict(joint, "Q", adata), atol=1e-10)
    np.testing.assert_allclose(knn.mean_effect_.iloc[0], joint.effects_[""].shared)


def test_cells_controls_keeps_the_pseudobulk(sim):
    query = make_query(sim, perturbations=["G00001", "G00002+G00099"], n_cells=20)
    prof = KNNBaseline().fit(sim).predict(query)
    ctrl = KNNBaseline(cells="controls").fit(sim).predict(query)
    assert not np.allclose(prof.X, ctrl.X)  # cells differ ...
    for label in ("G00001", "G00002+G00099"):
        rows = (query.obs["target_gene"] == label).to_numpy()
        # ... the carried cells keep the controls' zeros and land near the same mean
        assert (np.asarray(ctrl.X)[rows] == 0).any()
        np.testing.assert_allclose(
            np.asarray(ctrl.X)[rows].mean(0), np.asarray(prof.X)[rows].mean(0), atol=0.15
        )


def test_registered_and_sklearn_conventions(sim):
    assert BASELINES["knn"] is KNNBaseline
    model = KNNBaseline(gene_sets={"s": ["G00001", "G00002"]}, n_neighbors=3)
    assert clone(model).get_params() == model.get_params()
    pred = model.fit(sim).predict(make_query(sim))
    again = pickle.loads(pickle.dumps(model)).predict(make_query(sim))
    np.testing.assert_array_equal(pred.X, again.X)
    assert not hasattr(model, "_training")  # fit's scratch reference is dropped


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"coexpression_weight": 1.5}, "coexpression_weight"),
        ({"effects": "both"}, "effects"),
    ],
)
def test_bad_parameters_are_refused(sim, params, match):
    with pytest.raises(ValueError, match=match):
        KNNBaseline(**params).fit(sim)


def test_go_bp_neighbours_on_norman(norman, genesets_dir):
    k562 = norman[(norman.obs["cell_type"] == "k562").to_numpy()]
    keys = {"perturbation_key": "perturbation", "control_label": "control"}
    labels = k562.obs["perturbation"].astype(str)
    train = k562[~labels.str.contains("MAPK1").to_numpy()]
    model = KNNBaseline(gene_sets=genesets_dir / "go_bp_2021.gmt", **keys).fit(train)
    assert "MAPK1" not in model.target_effects_[""].index
    # MAPK1 (never perturbed in training): the mean of its 5 GO BP neighbours' effects
    weights = model.neighbors("MAPK1")
    assert len(weights) == 5 and np.isclose(weights.sum(), 1.0)
    assert weights.is_monotonic_decreasing
    query = make_query(k562, perturbations=["MAPK1"], n_cells=10, **keys)
    expected = weights.to_numpy() @ model.target_effects_[""].loc[weights.index].to_numpy()
    got = np.asarray(model.predict(query).X)[0] - model.control_profiles_.iloc[0].to_numpy()
    keep = model.control_profiles_.iloc[0].to_numpy() + expected > 0  # not clipped at 0
    np.testing.assert_allclose(got[keep], expected[keep], atol=1e-9)
