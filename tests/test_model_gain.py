"""Cross-fitted networks of PerturbationRegressor: folds, the residual scale, the
ensemble prediction, save/load, warm start, and the fallback towards the baseline."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sktx.datasets import make_perturbseq
from sktx.model_selection import PerturbationSplit
from sktx.regressor import PerturbationRegressor
from sktx.regressor._crossfit import crossfit_folds, ensemble_scale, residual_scale
from sktx.regressor._predict import PredictMixin

CTRL = "non-targeting"
SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def small(**kw):
    return PerturbationRegressor(**{**SMALL, "max_epochs": 2, "random_state": 0, **kw})


def query_for(adata, label):
    q = adata[(adata.obs["target_gene"] == CTRL).to_numpy()].copy()
    q.obs["target_gene"] = label
    return q


@pytest.fixture(scope="module")
def fitted(sim):
    return small(crossfit=3).fit(sim)


def test_folds_partition_the_perturbations():
    perts = [f"P{i}" for i in range(10)]
    folds = crossfit_folds(perts, 3, np.random.RandomState(0))
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert set().union(*folds) == set(perts)
    assert sum(len(f) for f in folds) == len(perts)  # disjoint


def test_residual_scale_known_answers():
    # t - b = 0.5 r on every perturbation: the least-squares factor is 0.5
    r = np.array([1.0, -2.0, 3.0])
    miss = 0.5 * r
    assert residual_scale([r @ miss, r @ r]) == pytest.approx(0.5)
    # pooled over folds = least squares over all perturbations at once
    r2, miss2 = np.array([1.0, 1.0]), np.array([2.0, 0.0])
    pooled = residual_scale([r @ miss + r2 @ miss2, r @ r + r2 @ r2])
    rr, mm = np.r_[r, r2], np.r_[miss, miss2]
    assert pooled == pytest.approx(rr @ mm / (rr @ rr))
    # a residual pointing away from what the baseline misses is switched off
    assert residual_scale([-3.0, 1.0]) == 0.0
    assert residual_scale([5.0, 1.0]) == 1.0  # never amplified
    assert residual_scale([0.0, 0.0]) == 1.0  # no residual: nothing to scale


def test_ensemble_scale_known_answers():
    # signal 1, one network's error 1: s = 0.5; the mean of 3 errors has variance 1/3
    assert ensemble_scale(0.5, 3) == pytest.approx(1 / (1 + 1 / 3))
    assert ensemble_scale(0.5, 1) == 0.5  # one network: unchanged
    assert ensemble_scale(0.0, 3) == 0.0 and ensemble_scale(1.0, 3) == 1.0
    per_gene = ensemble_scale(np.array([0.0, 0.25, 1.0], dtype=np.float32), 2)
    np.testing.assert_allclose(per_gene, [0.0, 0.25 / (0.25 + 0.375), 1.0], rtol=1e-6)
    assert per_gene.dtype == np.float32


@pytest.fixture(scope="module")
def learning():
    """A screen large enough (40 perturbations) for a residual that carries over."""
    data = make_perturbseq(n_cells=1500, n_genes=120, n_perturbations=40, random_state=0)
    return small(crossfit=3, max_epochs=6).fit(data)


def test_residual_scale_is_fitted_on_whole_pseudobulks(learning):
    """The factor comes from each out-of-fold group's whole delta, from the control mean."""
    fitted = learning
    state = fitted.fitted_state_
    labels = list(state.delta_labels)
    base = {lab: fitted._group_inputs(lab, "", state)["baseline"] for lab in labels}
    module = fitted._bare_module
    num = den = 0.0
    saved = state.residual_scale
    try:
        state.residual_scale = 1.0
        for j, fold in enumerate(fitted.crossfit_folds_):
            _load_member(fitted, j)
            for lab in fold:
                i = labels.index(lab)
                # the network's residual for a fitted label over its training baseline
                Xi = fitted._module_inputs(
                    [fitted._group_inputs(lab, "", state)], state.ctrl_means[:1], state
                )
                d, _ = module(**Xi)
                r = d.detach().numpy()[0] - base[lab]
                miss = state.deltas[i] - base[lab]
                num, den = num + float(r @ miss), den + float(r @ r)
    finally:
        state.residual_scale = saved
        _load_member(fitted, len(fitted.crossfit_folds_) - 1)
    single = float(np.clip(num / den, 0, 1)) if den > 0 else 1.0
    assert 0 < single < 1  # a residual that partly carries over: the check below bites
    assert fitted.residual_scale_ == pytest.approx(ensemble_scale(single, 3), abs=1e-5)


def _load_member(model, j):
    from sktx.regressor._crossfit import _load

    _load(model._bare_module, model.fitted_state_.members[j])
    model._bare_module.eval()


def test_each_network_validates_on_its_own_fold(fitted, sim):
    labels = set(sim.obs["target_gene"]) - {CTRL}
    folds = [set(f) for f in fitted.crossfit_folds_]
    assert len(folds) == 3 and set().union(*folds) == labels
    assert fitted.valid_perturbations_ == []
    assert fitted.train_perturbations_ == sorted(labels)
    members = fitted.history_[:, "member"]
    assert sorted(set(members)) == [0, 1, 2] and members == sorted(members)
    assert len(fitted.fitted_state_.members) == 3
    assert 0.0 <= fitted.residual_scale_ <= 1.0


def test_prediction_is_the_mean_of_the_networks(fitted, sim):
    state = fitted.fitted_state_
    keys = [("G00001", ""), ("G00001+G00002", "")]
    basal = np.repeat(state.ctrl_means[:1], 2, axis=0)
    saved, state.residual_scale = state.residual_scale, 1.0  # the residuals unshrunk
    try:
        mean, _ = fitted._predict_delta(keys, basal, state)
        single = []
        for weights in state.members:
            fitted._bare_module.load_state_dict(weights, strict=False)
            single.append(PredictMixin._predict_delta(fitted, keys, basal, state)[0])
    finally:
        state.residual_scale = saved
    np.testing.assert_allclose(mean, np.mean(single, axis=0), rtol=1e-5, atol=1e-6)
    # the networks differ (they trained on different folds)
    assert not np.allclose(single[0], single[1])


def test_untrained_crossfit_is_the_baseline(sim):
    a = small(max_epochs=0, crossfit=3).fit(sim)
    b = small(max_epochs=0, crossfit=0, validation_fraction=0.0).fit(sim)
    assert a.fitted_state_.members == [] and a.residual_scale_ == 1.0
    q = query_for(sim, "G00003+G00004")
    np.testing.assert_allclose(a.predict(q).X, b.predict(q).X, atol=1e-6)


def test_save_load_and_pickle_keep_the_networks(fitted, sim, tmp_path):
    q = query_for(sim, "G00002")
    expected = fitted.predict(q).X
    path = tmp_path / "model.pt"
    fitted.save_params(f_params=path)
    fresh = small(crossfit=3).initialize()
    fresh.load_params(f_params=path)
    assert len(fresh.fitted_state_.members) == 3
    np.testing.assert_array_equal(fresh.predict(q).X, expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(q).X, expected)


def test_warm_start_continues_each_network(sim):
    model = small(crossfit=2, max_epochs=1).fit(sim)
    first = [dict(w) for w in model.fitted_state_.members]
    model.set_params(warm_start=True).fit(sim)
    second = model.fitted_state_.members
    assert len(model.history_) == 4  # 2 networks x 1 epoch, twice
    # each network continued from its own weights: closer to them than to the other's
    key = "head.weight"
    for j in range(2):
        own = (second[j][key] - first[j][key]).abs().sum()
        other = (second[j][key] - first[1 - j][key]).abs().sum()
        assert own < other


def test_crossfit_must_be_a_non_negative_integer(sim):
    with pytest.raises(ValueError, match="crossfit"):
        small(crossfit=-1).fit(sim)
    with pytest.raises(ValueError, match="crossfit"):
        small(crossfit=2.5).fit(sim)


def test_fallback_never_loses_much_to_its_start():
    """Held-out perturbations of a small seeded screen: training costs at most a tolerance."""
    adata = make_perturbseq(
        n_cells=900, n_genes=60, n_perturbations=12, n_combinations=3, random_state=1
    )
    cv = PerturbationSplit(3, shuffle=True, random_state=0)
    start, trained = [], []
    for train, test in cv.split(adata):
        tr, te = adata[train].copy(), adata[test].copy()
        start.append(small(max_epochs=0).fit(tr).score(te))
        trained.append(small(max_epochs=4).fit(tr).score(te))
    # score = -MSE of pseudobulk deltas; a lost residual would cost far more than 5 %
    assert np.mean(trained) >= np.mean(start) * 1.05, (trained, start)


def test_gene_shrinkage_known_answers(fitted, sim):
    state = fitted.fitted_state_
    assert state.gene_scale.shape == (len(state.genes),)
    assert ((state.gene_scale >= 0) & (state.gene_scale <= 1)).all()
    q = query_for(sim, "G00001+G00002")
    saved = state.gene_scale.copy()
    try:
        fitted.set_params(residual_shrinkage="gene")
        # every gene at the global factor: the global prediction
        state.gene_scale = np.full_like(saved, state.residual_scale)
        same = fitted.predict_deltas(q).to_numpy()
        # every gene at 0: the baseline
        state.gene_scale = np.zeros_like(saved)
        none = fitted.predict_deltas(q).to_numpy()
        fitted.set_params(residual_shrinkage="global")
        glob = fitted.predict_deltas(q).to_numpy()
    finally:
        state.gene_scale = saved
        fitted.set_params(residual_shrinkage="global")
    np.testing.assert_allclose(same, glob, atol=1e-5)
    base = fitted._baseline("G00001+G00002", "", state)
    expected = np.maximum(state.ctrl_means[0] + base, 0) - state.ctrl_means[0]
    np.testing.assert_allclose(none[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="residual_shrinkage"):
        small(residual_shrinkage="per-gene").fit(sim)
