"""Baselines: known answers, sklearn conventions, real data."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sktx.baselines import (
    BASELINES,
    AdditiveBaseline,
    ControlBaseline,
    KNNBaseline,
    LinearBaseline,
    MeanBaseline,
)
from sktx.context import UnseenContextWarning
from sktx.data import DataContractError, log_normalize, pseudobulk
from sktx.datasets import make_perturbseq
from sktx.model_selection import make_query

CTRL = "non-targeting"
ALL = list(BASELINES)  # every baseline by its registry name
NORMAN = {"perturbation_key": "perturbation", "control_label": "control"}


@pytest.fixture(scope="module")
def logsim(sim):
    return log_normalize(sim)


def _pb(adata, label, key="target_gene"):
    pb = pseudobulk(adata, key)
    return pb.means[pb.row(label)]


def test_registry_names_every_baseline_once():
    # the names the CLI's report and metrics tables use
    assert ALL == ["control", "mean", "additive", "additive_joint", "linear", "knn"]
    classes = {type(make()) for make in BASELINES.values()}
    assert classes == {
        ControlBaseline,
        MeanBaseline,
        AdditiveBaseline,
        LinearBaseline,
        KNNBaseline,
    }
    joint = BASELINES["additive_joint"](perturbation_key="perturbation")
    assert joint.get_params()["effects"] == "joint"
    assert joint.get_params()["perturbation_key"] == "perturbation"
    # a factory's default can be overridden like any parameter
    assert BASELINES["additive_joint"](effects="singles").effects == "singles"


@pytest.mark.parametrize("name", ALL)
def test_sklearn_conventions(name, sim):
    model = BASELINES[name](perturbation_key="target_gene")
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(sim)
    query = make_query(sim)
    before = sim.copy()
    pred = model.fit(sim).predict(query)
    np.testing.assert_array_equal(sim.X.toarray(), before.X.toarray())  # input untouched
    assert pred.shape == (query.n_obs, sim.n_vars)
    pd.testing.assert_frame_equal(pred.obs, query.obs)
    assert list(pred.var_names) == list(sim.var_names)
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all()
    again = pickle.loads(pickle.dumps(model)).predict(query)
    np.testing.assert_array_equal(again.X, pred.X)


@pytest.mark.parametrize("name", ALL)
def test_counts_and_log1p_give_the_same_model(name, sim, logsim):
    query = make_query(logsim)
    a = BASELINES[name]().fit(sim).predict(query)
    b = BASELINES[name]().fit(logsim).predict(query)
    np.testing.assert_allclose(a.X, b.X, atol=1e-10)


def test_control_query_cells_are_returned_unchanged(logsim):
    ctrl = logsim[logsim.obs["target_gene"] == CTRL]
    for make in BASELINES.values():
        pred = make().fit(logsim).predict(ctrl)
        np.testing.assert_allclose(pred.X, ctrl.X.toarray(), atol=1e-6)


def test_mean_baseline_is_mean_of_pseudobulks(logsim):
    model = MeanBaseline().fit(logsim)
    pb = pseudobulk(logsim, "target_gene")
    expected = pb.means.mean(axis=0)  # control row included, as cell-eval
    np.testing.assert_allclose(model.mean_profiles_.iloc[0], expected)
    pred = model.predict(make_query(logsim))
    np.testing.assert_allclose(pred.X, np.tile(expected, (pred.n_obs, 1)))


def test_mean_baseline_per_cell_type():
    adata = make_perturbseq(
        n_cells=500,
        n_genes=40,
        n_perturbations=3,
        n_combinations=1,
        n_cell_types=2,
        random_state=0,
    )
    logged = log_normalize(adata)
    model = MeanBaseline(cell_type_key="cell_type").fit(adata)
    assert list(model.mean_profiles_.index) == ["type0", "type1"]
    for ct in ("type0", "type1"):
        sub = logged[logged.obs["cell_type"] == ct]
        expected = pseudobulk(sub, "target_gene").means.mean(axis=0)
        np.testing.assert_allclose(model.mean_profiles_.loc[ct], expected, atol=1e-10)
    query = make_query(adata, cell_type_key="cell_type")
    query.obs["cell_type"] = "type9"
    # an unseen cell type is predicted zero-shot, with a warning naming it
    with pytest.warns(UnseenContextWarning, match="type9"):
        model.predict(query)


def test_additive_baseline_known_answers(logsim):
    labels = set(logsim.obs["target_gene"]) - {CTRL}
    combo = next(lab for lab in sorted(labels) if "+" in lab)
    a, b = combo.split("+")
    held_out = logsim[logsim.obs["target_gene"] != combo]
    model = AdditiveBaseline().fit(held_out)
    ctrl = _pb(logsim, CTRL)
    expected = ctrl + (_pb(logsim, a) - ctrl) + (_pb(logsim, b) - ctrl)
    query = make_query(logsim, perturbations=[combo, a, "NOTAGENE"], n_cells=3)
    pred = model.predict(query)
    got = pd.DataFrame(pred.X, index=pred.obs["target_gene"].to_numpy())
    np.testing.assert_allclose(got.loc[combo].iloc[0], np.clip(expected, 0, None), atol=1e-9)
    # A seen label gets its own measured pseudobulk.
    np.testing.assert_allclose(got.loc[a].iloc[0], _pb(logsim, a), atol=1e-9)
    # An unseen single: control + mean training delta.
    mean_delta = model.deltas_.mean(axis=0).to_numpy()
    np.testing.assert_allclose(
        got.loc["NOTAGENE"].iloc[0], np.clip(ctrl + mean_delta, 0, None), atol=1e-9
    )


def test_linear_baseline_closed_form(logsim):
    model = LinearBaseline(n_components=4, ridge=0.1).fit(logsim)
    pb = pseudobulk(logsim, "target_gene")
    deltas, groups = pb.deltas(CTRL)
    b = deltas.mean(axis=0)
    G = model.gene_embedding_.to_numpy()
    assert G.shape == (logsim.n_vars, 4)
    P = np.vstack([model._embed(lab) for lab in groups["perturbation"]])
    # Ridge normal equations of W = (G'G + λI)^-1 G'(Y-b)P (P'P + λI)^-1.
    lhs = (G.T @ G + 0.1 * np.eye(4)) @ model.coef_ @ (P.T @ P + 0.1 * np.eye(4))
    np.testing.assert_allclose(lhs, G.T @ (deltas - b).T @ P, atol=1e-8)
    # Measured targets: the fit explains the training deltas better than their mean.
    fitted = np.vstack([model._delta(lab, "") for lab in groups["perturbation"]])
    assert ((fitted - deltas) ** 2).sum() < 0.5 * ((b - deltas) ** 2).sum()


def test_linear_baseline_prior_covers_unmeasured_targets(logsim):
    genes = list(logsim.var_names)
    prior = {f"set{i}": [*genes[i : i + 6], f"UNMEASURED{i % 3}"] for i in range(0, 100, 4)}
    plain = LinearBaseline(n_components=3).fit(logsim)
    with_prior = LinearBaseline(n_components=3, prior_gene_sets=prior).fit(logsim)
    assert with_prior.prior_embedding_ is not None
    assert with_prior.coef_.shape[1] > plain.coef_.shape[1]
    # Without a prior an unmeasured target is predicted as control + mean delta b.
    np.testing.assert_allclose(plain._delta("UNMEASURED0", ""), plain.intercept_.iloc[0])
    assert not np.allclose(with_prior._delta("UNMEASURED0", ""), with_prior.intercept_.iloc[0])
    emb = pd.DataFrame(np.eye(len(genes))[:, :5], index=genes)
    assert LinearBaseline(n_components=3, gene_embedding=emb).fit(logsim).coef_.shape == (3, 8)


def test_linear_baseline_gmt_file(genesets_dir, norman):
    k562 = norman[norman.obs["cell_type"] == "k562"]
    model = LinearBaseline(prior_gene_sets=genesets_dir / "msigdb_hallmark_v7.0.gmt", **NORMAN)
    model.fit(k562)
    assert model.prior_embedding_.shape[1] == 10
    pred = model.predict(make_query(k562, **NORMAN))
    assert (pred.X >= 0).all()


def test_linear_baseline_reads_the_gene_sets_grammar(logsim, tmp_path):
    genes = list(logsim.var_names)
    prior = {f"set{i}": [*genes[i : i + 6], f"UNMEASURED{i % 3}"] for i in range(0, 100, 4)}
    gmt = tmp_path / "prior.gmt"
    gmt.write_text("".join(f"{k}\tdesc\t" + "\t".join(v) + "\n" for k, v in prior.items()))
    from_dict = LinearBaseline(n_components=3, prior_gene_sets=prior).fit(logsim)
    for spec in (gmt, str(gmt), [str(gmt)], {k: f"{gmt}::{k}" for k in prior}):
        model = LinearBaseline(n_components=3, prior_gene_sets=spec).fit(logsim)
        np.testing.assert_array_equal(model.coef_, from_dict.coef_)
    # None (the default) and False: no prior
    assert LinearBaseline(prior_gene_sets=False).fit(logsim).prior_embedding_ is None
    with pytest.raises(ValueError, match="needs at least 2"):
        LinearBaseline(prior_gene_sets=f"{gmt}::set0").fit(logsim)
    with pytest.raises(FileNotFoundError, match=r"`prior_gene_sets`: .*nope\.gmt"):
        LinearBaseline(prior_gene_sets=[str(gmt), str(tmp_path / "nope.gmt")]).fit(logsim)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"ridge": -1.0}, "ridge"),
        ({"prior_gene_sets": "/no/such.gmt"}, "not found"),
    ],
)
def test_linear_baseline_rejects_bad_params(params, match, sim):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        LinearBaseline(**params).fit(sim)


def test_predict_needs_training_genes(sim):
    model = MeanBaseline().fit(sim)
    with pytest.raises(DataContractError, match="training genes"):
        model.predict(make_query(sim)[:, :10])


def test_score_is_minus_delta_mse_as_for_the_regressor(sim):
    """One meaning of `score` for every estimator (sktx._scoring): minus delta MSE."""
    from sktx._scoring import delta_mse_score
    from sktx.data import prepare

    additive = AdditiveBaseline().fit(sim)
    control = ControlBaseline().fit(sim)
    score = additive.score(sim)
    assert score == delta_mse_score(additive, prepare(sim))
    assert score <= 0.0
    # every perturbation was seen in fit: far closer than predicting no change
    assert score > 10 * control.score(sim)


@pytest.mark.parametrize("name", ALL)
def test_real_norman_per_cell_type(name, norman):
    keys = {**NORMAN, "cell_type_key": "cell_type"}
    model = BASELINES[name](**keys).fit(norman)
    query = make_query(norman, **keys)
    pred = model.predict(query)
    assert pred.shape == (query.n_obs, norman.n_vars)
    assert (pred.X >= 0).all()
    assert sp.issparse(norman.X)  # the fixture is untouched (still CSR)


def test_additive_joint_effects_known_answers(logsim):
    labels = set(logsim.obs["target_gene"]) - {CTRL}
    combo = next(lab for lab in sorted(labels) if "+" in lab)
    a, _ = combo.split("+")
    model = AdditiveBaseline(effects="joint").fit(logsim[logsim.obs["target_gene"] != combo])
    fx = model.effects_[""]
    assert fx.lam > 0
    query = make_query(logsim, perturbations=[combo, a, "NOTAGENE"], n_cells=2)
    got = pd.DataFrame(model.predict(query).X, index=query.obs["target_gene"].to_numpy())
    ctrl = _pb(logsim, CTRL)
    # seen labels keep their measured pseudobulk; unseen ones come from the joint fit
    np.testing.assert_allclose(got.loc[a].iloc[0], _pb(logsim, a), atol=1e-9)
    for label in (combo, "NOTAGENE"):
        expected = np.clip(ctrl + fx.predict(label.split("+")), 0, None)
        np.testing.assert_allclose(got.loc[label].iloc[0], expected, atol=1e-9)
    with pytest.raises(ValueError, match="effects"):
        AdditiveBaseline(effects="both").fit(logsim)


def test_joint_effects_beat_singles_on_held_out_norman_k562(norman):
    # Norman K562: 15 of 33 labels are combinations, several of whose targets never
    # appear alone; the joint fit learns them from the other combinations
    from sktx.model_selection import PerturbationSplit

    k562 = norman[(norman.obs["cell_type"] == "k562").to_numpy()].copy()
    cv = PerturbationSplit(5, shuffle=True, random_state=0, **NORMAN)
    err = {"singles": 0.0, "joint": 0.0}
    for train, test in cv.split(k562):
        real = pseudobulk(k562[test], "perturbation")  # already log1p
        for effects in err:
            model = AdditiveBaseline(effects=effects, **NORMAN).fit(k562[train])
            for i, label in enumerate(real.groups["perturbation"]):
                if label != "control":
                    err[effects] += ((model._profile(label, "") - real.means[i]) ** 2).sum()
    assert err["joint"] < 0.9 * err["singles"], err
