"""PerturbationRegressor: contract, reproducibility, AMP, checkpointing, unseen targets,
save/load, warm start across gene panels, errors, and a real-data fit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _accelerate_runner import new_pairs
from sklearn.base import clone

from sktx.data import DataContractError, log_normalize
from sktx.datasets import make_perturbseq
from sktx.regressor import PerturbationRegressor

CTRL = "non-targeting"
SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def small(**kw):
    return PerturbationRegressor(**{**SMALL, "max_epochs": 2, "random_state": 0, **kw})


def query_for(adata, label, key="target_gene"):
    q = adata[(adata.obs[key] == CTRL).to_numpy()].copy()
    q.obs[key] = label
    return q


@pytest.fixture(scope="module")
def fitted(sim):
    # one network with a validation split (crossfit=0): tests/test_model_gain.py covers
    # the cross-fitted default
    return small(max_epochs=3, crossfit=0).fit(sim)


def test_fit_predict_contract(sim, fitted):
    before_X = sim.X.copy()
    before_obs = sim.obs.copy()
    label = fitted.train_perturbations_[0]
    q = query_for(sim, label)
    out = fitted.predict(q)
    assert out.shape == (q.n_obs, sim.n_vars)
    assert list(out.var_names) == list(sim.var_names) == fitted.genes_
    assert out.obs.equals(q.obs)
    assert np.isfinite(out.X).all() and out.X.min() >= 0
    assert "log1p" in out.uns
    # the caller's data are untouched
    assert (sim.X != before_X).nnz == 0 and sim.obs.equals(before_obs)
    # the prediction differs from the controls (some change was predicted)
    assert not np.allclose(out.X, log_normalize(q).X.toarray())


def test_history_records_losses_throughput_memory(fitted):
    h = fitted.history_
    assert len(h) == 3
    for key in ("train_loss", "valid_loss", "cells_per_s", "peak_rss_gb", "dur"):
        assert all(np.isfinite(v) for v in h[:, key]), key
    assert min(h[:, "cells_per_s"]) > 0


def test_validation_split_is_by_perturbation(fitted, sim):
    train, valid = set(fitted.train_perturbations_), set(fitted.valid_perturbations_)
    assert valid and not train & valid
    labels = set(sim.obs["target_gene"]) - {CTRL}
    assert train | valid == labels


def test_reproducible_with_random_state(sim):
    q = query_for(sim, "G00001+G00002")
    a = small().fit(sim).predict(q).X
    b = small().fit(sim).predict(q).X
    np.testing.assert_array_equal(a, b)


def test_counts_and_log1p_inputs_agree(sim, fitted):
    label = fitted.train_perturbations_[1]
    q_counts = query_for(sim, label)
    q_log = log_normalize(q_counts)
    np.testing.assert_allclose(
        fitted.predict(q_counts).X, fitted.predict(q_log).X, rtol=1e-5, atol=1e-5
    )


def test_untrained_model_predicts_the_mean_baseline(sim):
    # max_epochs=0: the zero-initialised residual leaves the baseline
    model = small(max_epochs=0, validation_fraction=0.0).fit(sim)
    label = "G00001"
    q = query_for(sim, label)
    deltas = model.predict_deltas(q).loc[label].to_numpy()
    state = model.fitted_state_
    start = model._effects(state)[None]
    # a measured gene never perturbed: its start (sktx/regressor/_start.py); clipping at
    # 0 only ever raises values, so predicted >= baseline on average
    assert label not in start.rows
    assert np.corrcoef(deltas, start.predict([label]))[0, 1] > 0.95
    # the start is the typical effect (the mean of the fitted ones) moved towards similar
    # targets
    assert np.corrcoef(deltas, state.deltas.mean(0))[0, 1] > 0.8


def test_a_fitted_perturbation_is_predicted_as_fitted_without_a_residual(sim):
    # in-sample, trained or not, the model gives back what it was shown, as the
    # baselines do, not a leave-one-out start plus a residual
    from sktx.baselines import AdditiveBaseline

    joint = AdditiveBaseline(effects="joint", cells="controls").fit(sim)
    untrained = small(max_epochs=0, validation_fraction=0.0).fit(sim)
    # one network, no validation split: the residual is not shrunk away
    trained = small(max_epochs=3, crossfit=0, validation_fraction=0.0, lr=1e-2).fit(sim)
    fitted = untrained.train_perturbations_[0]
    new = new_pairs(untrained.train_perturbations_)[0]
    q = query_for(sim, fitted)
    ref = joint.predict(q).X.mean(0)
    for model in (untrained, trained):
        np.testing.assert_allclose(model.predict(q).X.mean(0), ref, atol=1e-4)
    # a perturbation it did not fit still gets the networks' residual
    qn = query_for(sim, new)
    assert trained.residual_scale_ == 1.0
    assert not np.allclose(trained.predict_deltas(qn), untrained.predict_deltas(qn), atol=1e-4)


def test_start_knn_is_the_knn_baseline_and_is_kept_with_the_fit(sim, tmp_path):
    # start="knn", untrained, predicts an unseen target as KNNBaseline does (same
    # gene sets, control co-expression, neighbours, joint effects); the start is
    # stored with the fit, so set_params alone does not change a fitted model
    from sktx.baselines import KNNBaseline

    targets = sorted({t for t in sim.obs["target_gene"].unique() if "+" not in t} - {CTRL})
    held = targets[0]
    train = sim[~sim.obs["target_gene"].str.contains(held).to_numpy()].copy()
    sets = {"s1": targets[:3], "s2": targets[3:6], "s3": [targets[0], targets[6]]}
    knn = KNNBaseline(gene_sets=sets, cells="controls").fit(train)
    model = small(gene_sets=sets, max_epochs=0, start="knn").fit(train)
    shrunk = small(gene_sets=sets, max_epochs=0).fit(train)
    q = query_for(sim, held)
    ref = np.asarray(knn.predict(q).X.mean(0)).ravel()
    np.testing.assert_allclose(model.predict(q).X.mean(0), ref, atol=1e-4)
    assert np.abs(shrunk.predict(q).X.mean(0) - ref).max() > 1e-2
    assert model.fitted_state_.start == "knn" and shrunk.fitted_state_.start == "shrunk"
    before = shrunk.predict_deltas(q)
    shrunk.set_params(start="knn")
    np.testing.assert_array_equal(shrunk.predict_deltas(q), before)
    f = tmp_path / "params.pt"
    model.save_params(f_params=f)
    fresh = small(gene_sets=sets).initialize()
    fresh.load_params(f_params=f)
    np.testing.assert_allclose(fresh.predict_deltas(q), model.predict_deltas(q), atol=1e-6)


def test_bf16_close_to_fp32(sim):
    q = query_for(sim, "G00003")
    a = small(precision="32").fit(sim)
    b = small(precision="bf16").fit(sim)
    assert b.precision_ == "bf16"
    np.testing.assert_allclose(a.predict(q).X, b.predict(q).X, atol=0.05)


def test_checkpointing_does_not_change_training(sim):
    q = query_for(sim, "G00003")
    a = small(precision="32", gradient_checkpointing=False).fit(sim)
    b = small(precision="32", gradient_checkpointing=True).fit(sim)
    np.testing.assert_allclose(a.predict(q).X, b.predict(q).X, atol=1e-5)
    np.testing.assert_allclose(a.history_[:, "train_loss"], b.history_[:, "train_loss"], rtol=1e-5)


def test_unseen_targets_and_combinations(sim):
    held_out = "G00004"
    train = sim[(sim.obs["target_gene"] != held_out).to_numpy()].copy()
    # a prior that covers a gene outside the panel
    sets = {"s1": ["G00004", "OUTSIDE1", "G00010"], "s2": ["OUTSIDE1", "G00011"]}
    model = small(gene_sets=sets, on_unknown_target="error").fit(train)
    for label in (held_out, "G00004+G00001", "OUTSIDE1", "OUTSIDE1+G00002"):
        out = model.predict(query_for(sim, label))
        assert np.isfinite(out.X).all() and out.X.min() >= 0, label
    with pytest.raises(DataContractError, match="NOSUCHGENE"):
        model.predict(query_for(sim, "NOSUCHGENE"))
    model.set_params(on_unknown_target="warn")
    with pytest.warns(UserWarning, match="NOSUCHGENE"):
        out = model.predict(query_for(sim, "NOSUCHGENE"))
    assert out.X.min() >= 0


def test_var_mismatch_is_a_clear_error(sim, fitted):
    q = query_for(sim, fitted.train_perturbations_[0])[:, 5:].copy()
    with pytest.raises(DataContractError, match="not in `var_names`"):
        fitted.predict(q)


def test_bad_parameters(sim):
    with pytest.raises(ValueError, match="precision"):
        small(precision="8").fit(sim)
    with pytest.raises(ValueError, match="validation_fraction"):
        small(validation_fraction=1.5).fit(sim)
    with pytest.raises(ValueError, match="`start` must be 'shrunk' or 'knn', got 'mean'"):
        small(start="mean").fit(sim)
    with pytest.raises(DataContractError, match="obs"):
        small(perturbation_key="nope").fit(sim)


def test_pickle_and_save_params_round_trip(sim, fitted, tmp_path):
    q = query_for(sim, "G00001+G00002")
    ref = fitted.predict(q).X
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(q).X, ref)
    f = tmp_path / "params.pt"
    fitted.save_params(f_params=f)
    fresh = small().initialize()
    fresh.load_params(f_params=f)
    np.testing.assert_array_equal(fresh.predict(q).X, ref)


def test_clone_and_params(fitted):
    params = fitted.get_params()
    for key in ("perturbation_key", "d_model", "precision", "n_neighbors", "gene_sets"):
        assert key in params
    c = clone(fitted)
    assert c.get_params()["d_model"] == 16 and not hasattr(c, "genes_")


def test_warm_start_across_gene_counts():
    small_data = make_perturbseq(n_cells=400, n_genes=60, n_perturbations=5, random_state=1)
    big_data = make_perturbseq(n_cells=400, n_genes=120, n_perturbations=5, random_state=1)
    model = small(crossfit=0).fit(small_data)
    weights = {k: v.clone() for k, v in model.module_.state_dict().items() if k != "_extra_state"}
    model.set_params(warm_start=True, max_epochs=0)
    model.fit(big_data)
    kept = model.module_.state_dict()
    assert all(torch.equal(weights[k], kept[k]) for k in weights)
    assert len(model.genes_) == 120
    model.set_params(max_epochs=1)
    model.fit(big_data)
    assert len(model.history_) == 3  # history continues
    moved = model.module_.state_dict()
    assert any(not torch.equal(weights[k], moved[k]) for k in weights)
    out = model.predict(query_for(big_data, "G00001"))
    assert out.shape[1] == 120
    # partial_fit continues training even without warm_start
    model.set_params(warm_start=False)
    model.partial_fit(small_data)
    assert len(model.history_) == 4 and len(model.genes_) == 60


def test_fine_tune_a_model_pretrained_on_another_screen():
    # pretrain on a screen with two cell types, then fine-tune on another one with other
    # genes, other obs keys and no cell types (docs/model.md, "Pretraining on other screens")
    pre_data = make_perturbseq(
        n_cells=600, n_genes=50, n_perturbations=4, n_cell_types=2, random_state=2
    )
    other = make_perturbseq(n_cells=400, n_genes=70, n_perturbations=5, random_state=3)
    other.obs = other.obs.rename(columns={"target_gene": "guide_target"})
    labels = other.obs["guide_target"].astype(str)
    other.obs["guide_target"] = labels.where(labels != CTRL, "ctrl")
    model = small(cell_type_key="cell_type", crossfit=0).fit(pre_data)
    pretrained = {k: v.clone() for k, v in model.module_.state_dict().items() if torch.is_tensor(v)}
    n_pre = len(model.history_)
    model.set_params(
        warm_start=True, perturbation_key="guide_target", control_label="ctrl",
        cell_type_key=None, max_epochs=0,
    )  # fmt: skip
    model.fit(other)
    kept = model.module_.state_dict()
    assert all(torch.equal(pretrained[k], kept[k]) for k in pretrained)  # starts from them
    assert model.genes_ == list(other.var_names) and model.fitted_state_.cell_types == ["all"]
    model.set_params(max_epochs=1).fit(other)
    assert len(model.history_) == n_pre + 1
    assert any(not torch.equal(pretrained[k], model.module_.state_dict()[k]) for k in pretrained)
    q = other[(other.obs["guide_target"] == "ctrl").to_numpy()].copy()
    q.obs["guide_target"] = model.train_perturbations_[0]
    assert model.predict(q).shape == (q.n_obs, 70)


def test_cell_types_and_score():
    data = make_perturbseq(
        n_cells=600, n_genes=50, n_perturbations=4, n_cell_types=2, random_state=2
    )
    model = small(cell_type_key="cell_type", distributional_loss=0.5).fit(data)
    score = model.score(data)
    assert np.isfinite(score) and score <= 0
    q = query_for(data, "G00001")
    out = model.predict(q)
    assert out.n_obs == q.n_obs


def test_distributional_loss_default_and_on(sim):
    # default 0 (chosen on Datlinger Jurkat); 1.0 adds the energy distance on the cells
    assert PerturbationRegressor().get_params()["distributional_loss"] == 0.0
    on = small(distributional_loss=1.0).fit(sim)
    off = small(distributional_loss=0.0).fit(sim)
    assert np.all(np.isfinite(on.history[:, "train_loss"]))
    assert np.all(np.isfinite(off.history[:, "train_loss"]))
    d_on = on.predict_deltas(sim).to_numpy()
    d_off = off.predict_deltas(sim).to_numpy()
    assert d_on.shape == d_off.shape
    assert not np.allclose(d_on, d_off)


def test_pipeline_with_gene_selector(sim):
    from sklearn.pipeline import Pipeline

    from sktx.selection import GeneSelector

    pipe = Pipeline([("select", GeneSelector(n_genes=40, random_state=0)), ("model", small())]).fit(
        sim
    )
    out = pipe.predict(query_for(sim, "G00001"))
    assert out.n_vars == 40


def test_norman_fit_beats_no_change_on_held_out_perturbations(norman, genesets_dir):
    """A one-minute CPU fit on real K562 data predicts held-out perturbations better
    than "no change" (pseudobulk-delta MSE)."""
    from sktx.model_selection import PerturbationSplit

    keys = dict(perturbation_key="perturbation", control_label="control")
    k562 = norman[(norman.obs["cell_type"] == "k562").to_numpy()]
    train_idx, test_idx = next(
        PerturbationSplit(5, shuffle=True, random_state=0, **keys).split(k562)
    )
    train, test = k562[train_idx].copy(), k562[test_idx].copy()
    model = PerturbationRegressor(
        **keys,
        cell_type_key="cell_type",
        max_epochs=15,
        n_jobs=1,
        random_state=0,
        # GO BP embeds the held-out targets, most of which are not measured
        gene_sets=str(genesets_dir / "go_bp_2021.gmt"),
    )
    # "one minute" is kept by the size of the fit (15 epochs at most on ~2,700 cells;
    # bench_quality.py measures ~5 s per fold), not by a timed assertion
    model.fit(train)
    ours = model.score(test)
    X = test.X.toarray()
    labels = test.obs["perturbation"].to_numpy()
    ctrl = X[labels == "control"].mean(0)
    no_change = -np.mean(
        [np.mean((X[labels == p].mean(0) - ctrl) ** 2) for p in set(labels) - {"control"}]
    )
    assert ours > no_change * 0.9, (ours, no_change)


def test_early_stopping_stops_and_restores_the_best_epoch(sim):
    # lr=0: the validation loss never improves after epoch 1, so training stops after
    # 1 + n_iter_no_change epochs
    model = small(max_epochs=20, lr=0.0, n_iter_no_change=2, crossfit=0).fit(sim)
    assert len(model.history_) == 3
    # off: every epoch runs
    model = small(max_epochs=6, lr=0.0, n_iter_no_change=2, crossfit=0, early_stopping=False)
    assert model.fit(sim).history_[-1, "epoch"] == 6
    # switched on for a warm-started fit without rebuilding the callbacks
    model.set_params(early_stopping=True, warm_start=True, max_epochs=20).fit(sim)
    assert model.history_[-1, "epoch"] == 6 + 1 + 2  # its first epoch is its best


def test_early_stopping_needs_validation(sim):
    with pytest.raises(ValueError, match="validation_fraction"):
        small(early_stopping=True, validation_fraction=0.0, crossfit=0).fit(sim)
    with pytest.raises(ValueError, match="early_stopping"):
        small(early_stopping="yes").fit(sim)
    # "auto" without validation trains all epochs
    model = small(max_epochs=3, validation_fraction=0.0, crossfit=0).fit(sim)
    assert len(model.history_) == 3
    assert model.residual_scale_ == 1.0


def test_residual_scale_is_fitted_on_validation_and_applied(sim, fitted):
    assert 0.0 <= fitted.residual_scale_ <= 1.0
    q = query_for(sim, "G00001")
    state = fitted.fitted_state_
    base = fitted._baseline("G00001", "", state)  # residual scale 0 = the baseline itself
    saved = state.residual_scale
    try:
        state.residual_scale = 1.0
        full = fitted.predict_deltas(q).to_numpy()
        state.residual_scale = 0.0
        none = fitted.predict_deltas(q).to_numpy()
    finally:
        state.residual_scale = saved
    np.testing.assert_allclose(
        none[0], np.maximum(state.ctrl_means[0] + base, 0) - state.ctrl_means[0], atol=1e-5
    )
    assert not np.allclose(full, none)


def test_basal_fitted_makes_the_predicted_mean_independent_of_the_query_draw(sim, fitted):
    q = query_for(sim, "G00001")
    half = q.n_obs // 2
    a, b = q[:half].copy(), q[half:].copy()
    mean = {}
    for basal in ("fitted", "query"):
        fitted.set_params(basal=basal)
        try:
            mean[basal] = [np.asarray(fitted.predict(x).X).mean(0) for x in (a, b)]
        finally:
            fitted.set_params(basal="fitted")
    np.testing.assert_allclose(*mean["fitted"], atol=1e-5)
    assert not np.allclose(*mean["query"], atol=1e-3)
    fitted.set_params(basal="mean")
    try:
        with pytest.raises(ValueError, match="basal"):
            fitted.predict(a)
    finally:
        fitted.set_params(basal="fitted")


def test_training_sets_get_their_basal_shift_from_the_fitted_control_means():
    # every training and validation set: its control mean + the shift = the fitted
    # control mean of its own cell type (docs/model.md, "The basal shift")
    from skorch.callbacks import Callback

    seen = []

    class Spy(Callback):
        def on_batch_begin(self, net, batch=None, **kw):
            seen.append((batch[0]["basal"].clone(), batch[0]["basal_shift"].clone()))

    data = make_perturbseq(
        n_cells=600, n_genes=40, n_perturbations=4, n_cell_types=2, random_state=2
    )
    model = small(cell_type_key="cell_type", crossfit=0, callbacks=[Spy()]).fit(data)
    ctrl = torch.as_tensor(model.fitted_state_.ctrl_means)
    assert len(ctrl) == 2 and seen
    for basal, shift in seen:
        assert shift.abs().max() > 0  # sampled controls miss the fitted mean
        ref = basal + shift
        # each row is one of the two fitted control means (float32 round-off)
        dist = (ref[:, None, :] - ctrl[None]).abs().amax(-1)
        assert bool((dist.min(1).values < 1e-5).all())
    assert {
        int(i) for b, s in seen for i in ((b + s)[:, None] - ctrl[None]).abs().amax(-1).argmin(1)
    } == {0, 1}
