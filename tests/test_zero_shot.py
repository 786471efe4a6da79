"""Zero-shot prediction for a cell type never seen in fit (sktx.context, docs/zero_shot.md)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sktx.baselines import AdditiveBaseline, LinearBaseline, MeanBaseline
from sktx.context import UnseenContextWarning, fit_context_transfer
from sktx.model_selection import make_query
from sktx.regressor import PerturbationRegressor

KEYS = {"perturbation_key": "target_gene", "control_label": "ctrl", "cell_type_key": "line"}
N_GENES = 20
# the log1p delta of each perturbation, the same in every cell line
DELTA = {
    "P1": np.r_[np.full(5, 0.5), np.zeros(15)],
    "P2": np.r_[np.zeros(5), np.full(5, -0.4), np.zeros(10)],
}


def _lines(names=("a", "b", "c"), n_ctrl=30, seed=0) -> ad.AnnData:
    """Log1p cells: each line's controls, and per perturbation the same cells + DELTA."""
    rng = np.random.RandomState(seed)
    blocks, obs = [], []
    for line in names:
        level = rng.uniform(1.0, 3.0, N_GENES)  # every line has its own control profile
        ctrl = level + rng.normal(0, 0.1, (n_ctrl, N_GENES))
        for label, delta in [("ctrl", 0.0), *DELTA.items()]:
            blocks.append(ctrl + delta)
            obs += [(label, line)] * n_ctrl
    frame = pd.DataFrame(obs, columns=["target_gene", "line"])
    frame.index = [f"c{i}" for i in range(len(frame))]
    out = ad.AnnData(
        np.vstack(blocks).astype(np.float32),
        obs=frame,
        var=pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)]),
    )
    out.uns["log1p"] = {"base": None}
    return out


def _split(adata, held_out="c"):
    is_test = (adata.obs["line"] == held_out).to_numpy()
    return adata[~is_test].copy(), adata[is_test].copy()


def _predict(model, query):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = model.predict(query)
    return pred, [w for w in caught if issubclass(w.category, UnseenContextWarning)]


def _regressor(**kw):
    return PerturbationRegressor(
        **KEYS, gene_sets=False, max_epochs=0, set_size=8, random_state=0, **kw
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: MeanBaseline(**KEYS),
        lambda: AdditiveBaseline(**KEYS),
        lambda: AdditiveBaseline(effects="joint", cells="controls", **KEYS),
        lambda: LinearBaseline(n_components=1, **KEYS),
        lambda: _regressor(),
    ],
    ids=["mean", "additive", "additive_joint_controls", "linear", "regressor"],
)
def test_warning_names_the_unseen_cell_type_and_not_the_seen_ones(make):
    train, test = _split(_lines())
    model = make().fit(train)
    _, caught = _predict(model, make_query(test, **KEYS))
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "query cell type(s) ['c'] in `obs['line']` were never seen in `fit`" in msg
    assert "(fitted: ['a', 'b'])" in msg and "predicts them zero-shot" in msg
    assert caught[0].filename == __file__  # points at the caller's line
    # seen cell types: silence
    _, caught = _predict(model, make_query(train, **KEYS))
    assert caught == []


def test_warning_is_a_user_warning():
    assert issubclass(UnseenContextWarning, UserWarning)


def test_baselines_known_answer_on_an_unseen_line():
    train, test = _split(_lines())
    query = make_query(test, **KEYS)
    # the query's cells of line c are its controls: their mean is c's control profile
    ctrl_c = np.asarray(query.X.mean(0)).ravel()
    is_p1 = (query.obs["target_gene"] == "P1").to_numpy()
    same, _ = _predict(AdditiveBaseline(**KEYS).fit(train), query)
    np.testing.assert_allclose(
        same.X[is_p1], np.tile(ctrl_c + DELTA["P1"], (is_p1.sum(), 1)), atol=1e-5
    )
    mean, _ = _predict(MeanBaseline(**KEYS).fit(train), query)
    # mean response = mean over labels (control included, cell-eval's rule) of the deltas
    response = (DELTA["P1"] + DELTA["P2"]) / 3
    np.testing.assert_allclose(
        mean.X[is_p1], np.tile(ctrl_c + response, (is_p1.sum(), 1)), atol=1e-5
    )


def test_transfer_known_answer_when_effects_are_the_same_in_every_line():
    lines = ["a", "b", "c"]
    deltas = np.stack([DELTA[p] for _ in lines for p in DELTA])
    labels = [p for _ in lines for p in DELTA]
    cts = [ct for ct in lines for _ in DELTA]
    ctrl = {ct: np.full(N_GENES, 2.0) for ct in lines}
    tr = fit_context_transfer(deltas, labels, cts, ctrl, control_label="ctrl")
    # each line is predicted exactly from the others: nothing to shrink
    np.testing.assert_allclose(tr.coef, [1.0, 1.0], atol=1e-8)
    new_ctrl = np.linspace(0.1, 3.0, N_GENES)
    expected = np.maximum(new_ctrl + DELTA["P2"], 0.0) - new_ctrl  # a gene cannot go below 0
    np.testing.assert_allclose(tr.predict("P2", new_ctrl), expected, atol=1e-12)
    # an unmeasured combination: the sum of its singles' specific effects
    np.testing.assert_allclose(tr.effect("P1+P2"), DELTA["P1"] + DELTA["P2"] - tr.mean_response)


def test_transfer_shrinks_specific_effects_that_do_not_carry_between_lines():
    rng = np.random.RandomState(0)
    lines, labels = ["a", "b", "c", "d"], [f"P{i}" for i in range(8)]
    shared = rng.normal(0, 0.3, 50)  # the mean response carries, the specific effects do not
    deltas = np.stack([shared + rng.normal(0, 0.3, 50) for _ in lines for _ in labels])
    tr = fit_context_transfer(
        deltas,
        [p for _ in lines for p in labels],
        [ct for ct in lines for _ in labels],
        {ct: np.full(50, 2.0) for ct in lines},
        control_label="ctrl",
    )
    assert tr.coef[0] > 0.8 and tr.coef[1] < 0.2
    flat = fit_context_transfer(
        deltas,
        [p for _ in lines for p in labels],
        [ct for ct in lines for _ in labels],
        {ct: np.full(50, 2.0) for ct in lines},
        control_label="ctrl",
        shrink=False,
    )
    np.testing.assert_array_equal(flat.coef, [1.0, 1.0])


def test_transfer_pseudocount_makes_effects_multiplicative():
    # expression 1 -> 2 in both fitted lines: a fold change of 2
    ctrl = {ct: np.log1p(np.ones(2)) for ct in ("a", "b")}
    deltas = np.full((2, 2), np.log1p(2.0) - np.log1p(1.0))
    tr = fit_context_transfer(
        deltas, ["P", "P"], ["a", "b"], ctrl, control_label="ctrl", pseudocount=1e-9
    )
    new = np.log1p(np.array([0.0, 10.0]))
    # expression 0 stays 0, 10 becomes 20
    np.testing.assert_allclose(np.expm1(new + tr.predict("P", new)), [0.0, 20.0], atol=1e-6)
    # with pseudocount 1 (log1p deltas) the same log1p delta is added to both
    flat = fit_context_transfer(deltas, ["P", "P"], ["a", "b"], ctrl, control_label="ctrl")
    np.testing.assert_allclose(flat.predict("P", new), deltas[0])


def test_regressor_untrained_is_the_transfer_on_an_unseen_line():
    train, test = _split(_lines())
    model = _regressor().fit(train)
    query = make_query(test, **KEYS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenContextWarning)
        got = model.predict_deltas(query)
    np.testing.assert_allclose(got.loc["P1|c"].to_numpy(), DELTA["P1"], atol=1e-4)
    np.testing.assert_allclose(got.loc["P2|c"].to_numpy(), DELTA["P2"], atol=1e-4)


def test_no_cell_type_key_never_warns(sim):
    model = MeanBaseline().fit(sim)
    _, caught = _predict(model, make_query(sim))
    assert caught == []


@pytest.fixture(scope="module")
def norman_two_lines(norman):
    """K562 and A172 cells of four targets (fit) and T98G's controls (an unseen line)."""
    keep = ["control", "SGK1", "MAPK1", "TGFBR2", "MAP2K3"]
    obs = norman.obs
    rows = obs["perturbation"].isin(keep) & obs["cell_type"].isin(["k562", "A172"])
    new = (obs["perturbation"] == "control") & (obs["cell_type"] == "T98G")
    return norman[rows.to_numpy()].copy(), norman[new.to_numpy()].copy()


def test_seen_line_predictions_unchanged_by_the_zero_shot_path(norman_two_lines, monkeypatch):
    train, new = norman_two_lines
    keys = {
        "perturbation_key": "perturbation",
        "control_label": "control",
        "cell_type_key": "cell_type",
    }
    model = PerturbationRegressor(
        **keys, gene_sets=False, max_epochs=1, set_size=16, n_jobs=1, random_state=0
    ).fit(train)
    seen_q = make_query(train, **keys)
    new_q = make_query(new, perturbations=["SGK1", "MAPK1"], n_cells=20, **keys)
    both = ad.concat([seen_q, new_q], index_unique="-")
    # one group per network batch: batch composition moves float32 results by ~1e-7
    model.batch_size = 1
    import sktx.regressor._predict as predict_module

    def refuse(*args, **kwargs):
        raise AssertionError("the zero-shot transfer ran for a seen cell type")

    with monkeypatch.context() as m:
        m.setattr(predict_module, "transfer", refuse)
        seen, caught = _predict(model, seen_q)
    assert caught == []
    mixed, caught = _predict(model, both)
    assert len(caught) == 1 and "['T98G']" in str(caught[0].message)
    np.testing.assert_array_equal(mixed.X[: seen_q.n_obs], seen.X)
    baseline = AdditiveBaseline(**keys).fit(train)
    seen_b, _ = _predict(baseline, seen_q)
    mixed_b, _ = _predict(baseline, both)
    np.testing.assert_array_equal(mixed_b.X[: seen_q.n_obs], seen_b.X)
