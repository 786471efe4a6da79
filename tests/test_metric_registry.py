"""The metric registry: one registered entry reaches the table, the scorers and the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sktx import log_normalize
from sktx.baselines import MeanBaseline
from sktx.datasets import make_perturbseq
from sktx.metrics import (
    METRICS,
    Metric,
    PerturbationScorer,
    available_metrics,
    build_mean_baseline,
    get_metric,
    get_scorer,
    perturbation_metrics,
    register_metric,
    unregister_metric,
    vcc_score,
)
from sktx.report import evaluate_predictions

CTRL = "non-targeting"
BUILTIN = ("des", "pds", "mae", "pearson_delta", "top_de_mse")
# perturbation_metrics columns of the built-in metrics, as files written by earlier releases.
TABLE_COLUMNS = [
    "perturbation",
    "mae",
    "pearson_delta",
    "pds",
    "des",
    "n_de_real",
    "n_de_pred",
    "top_de_mse",
]


@pytest.fixture(scope="module")
def real():
    adata = make_perturbseq(
        n_cells=400, n_genes=50, n_perturbations=4, n_combinations=0, random_state=0
    )
    return log_normalize(adata)


@pytest.fixture(scope="module")
def noisy(real):
    rng = np.random.default_rng(0)
    pred = real.copy()
    X = pred.X.toarray() if sp.issparse(pred.X) else np.array(pred.X)
    pert = (pred.obs["target_gene"] != CTRL).to_numpy()
    X[pert] = np.clip(X[pert] + rng.normal(0, 0.3, X[pert].shape), 0, None)
    pred.X = X
    return pred


def _sign_agreement(ctx):
    """Fraction of genes whose predicted delta has the sign of the real delta."""
    return (np.sign(ctx.pred_delta) == np.sign(ctx.real_delta)).mean(axis=1)


def _max_abs_error(ctx):
    return np.abs(ctx.pred_means - ctx.real_means).max(axis=1)


@pytest.fixture
def sign_metric():
    metric = register_metric(
        Metric("sign_agreement", _sign_agreement, label="sign agreement", doc="Sign agreement.")
    )
    yield metric
    unregister_metric("sign_agreement")


@pytest.fixture
def max_error_metric():
    metric = register_metric(
        Metric("max_abs_error", _max_abs_error, greater_is_better=False, label="max_abs_error")
    )
    yield metric
    unregister_metric("max_abs_error")


def _pseudobulk_deltas(adata) -> pd.DataFrame:
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    means = pd.DataFrame(X, index=adata.obs["target_gene"].astype(str).to_numpy()).groupby(level=0)
    means = means.mean()
    return means.drop(index=CTRL) - means.loc[CTRL]


def test_builtin_metrics_keep_names_order_and_columns(real, noisy):
    assert METRICS == BUILTIN
    assert available_metrics() == BUILTIN  # nothing left over from other tests
    labels = [get_metric(m).label for m in BUILTIN]
    assert labels == ["DES", "PDS", "MAE", "pearson_delta", "top20_DE_MSE"]
    assert [get_metric(m).greater_is_better for m in BUILTIN] == [True, True, False, True, False]
    assert [m for m in BUILTIN if get_metric(m).in_vcc] == ["des", "pds", "mae"]
    assert [m for m in BUILTIN if get_metric(m).needs_de] == ["des", "top_de_mse"]
    assert list(perturbation_metrics(real, noisy).columns) == TABLE_COLUMNS
    sub = perturbation_metrics(real, noisy, metrics=["top_de_mse", "mae"])
    assert list(sub.columns) == ["perturbation", "mae", "top_de_mse"]
    # the registry's scorers, plus the 2025 VCC average and the 2026 cell-eval2 score
    names = {"des", "pds", "neg_mae", "pearson_delta", "neg_top_de_mse", "vcc", "vcc2026"}
    with pytest.raises(ValueError, match="unknown scorer") as err:
        get_scorer("accuracy")
    assert str(sorted(names)) in str(err.value)


def test_registered_metric_joins_the_table(real, noisy, sign_metric):
    assert available_metrics() == (*BUILTIN, "sign_agreement")
    table = perturbation_metrics(real, noisy)
    assert list(table.columns) == [*TABLE_COLUMNS, "sign_agreement"]
    # The built-in columns are untouched by the extra metric.
    builtin = perturbation_metrics(real, noisy, metrics=BUILTIN)
    pd.testing.assert_frame_equal(table.drop(columns="sign_agreement"), builtin)
    # Its values are what the definition says, from each side's own pseudobulks.
    r, p = _pseudobulk_deltas(real), _pseudobulk_deltas(noisy)
    expected = (np.sign(p) == np.sign(r)).mean(axis=1)
    np.testing.assert_allclose(table.set_index("perturbation")["sign_agreement"], expected)
    alone = perturbation_metrics(real, noisy, metrics=["sign_agreement"])
    assert list(alone.columns) == ["perturbation", "sign_agreement"]
    assert (
        perturbation_metrics(real, real, metrics=["sign_agreement"])["sign_agreement"] == 1
    ).all()


def test_registered_metric_has_a_scorer(max_error_metric):
    sim = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    model = MeanBaseline().fit(sim)
    scorer = get_scorer("neg_max_abs_error")
    assert repr(scorer) == "PerturbationScorer('max_abs_error', greater_is_better=False)"
    assert repr(get_scorer("max_abs_error")) == repr(scorer)
    real, pred = scorer.real_and_predicted(model, sim)
    expected = perturbation_metrics(real, pred)["max_abs_error"].mean()
    assert scorer(model, sim) == -expected < 0
    assert PerturbationScorer("max_abs_error")(model, sim) == expected


def test_removed_metric_is_gone(real):
    assert "max_abs_error" not in available_metrics()
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("neg_max_abs_error")
    with pytest.raises(ValueError, match="unknown metrics"):
        perturbation_metrics(real, real, metrics=["max_abs_error"])


def test_registered_metric_reaches_the_report(real, noisy, sign_metric):
    base = build_mean_baseline(real)
    out = evaluate_predictions(real, {"noisy": noisy, "mean": base})
    metrics = out["metrics"]
    assert list(metrics.columns) == [
        "DES",
        "PDS",
        "MAE",
        "pearson_delta",
        "top20_DE_MSE",
        "sign agreement",
        "VCC",
    ]
    table = perturbation_metrics(real, noisy)
    assert metrics.loc["noisy", "sign agreement"] == table["sign_agreement"].mean()
    assert metrics.loc["noisy", "VCC"] == vcc_score(real, noisy)  # not part of the VCC average
    per_pert = out["per_perturbation"]
    assert "sign agreement" in per_pert and "sign_agreement" not in per_pert
    got = per_pert[per_pert["model"] == "noisy"]["sign agreement"].to_numpy()
    np.testing.assert_array_equal(got, table["sign_agreement"].to_numpy())


def test_in_vcc_metric_joins_the_vcc_average(real, noisy):
    register_metric(Metric("sign_agreement", _sign_agreement, in_vcc=True))
    try:
        score, parts = vcc_score(real, noisy, return_components=True)
    finally:
        unregister_metric("sign_agreement")
    assert list(parts["scaled"]) == ["des", "pds", "mae", "sign_agreement"]
    u, b = parts["user"]["sign_agreement"], parts["baseline"]["sign_agreement"]
    assert parts["scaled"]["sign_agreement"] == pytest.approx(max(0.0, (u - b) / (1 - b)))
    assert score == pytest.approx(np.mean(list(parts["scaled"].values())))
    assert score != vcc_score(real, noisy)


def test_de_results_need_needs_de(real, noisy):
    def de_count(ctx):
        return np.array([(d.fdr < ctx.fdr_threshold).sum() for d in ctx.real_de], dtype=float)

    register_metric(Metric("n_sig", de_count))
    try:
        with pytest.raises(RuntimeError, match="needs_de=True"):
            perturbation_metrics(real, noisy, metrics=["n_sig"])
        register_metric(Metric("n_sig", de_count, needs_de=True), replace=True)
        table = perturbation_metrics(real, noisy, metrics=["n_sig", "des"])
    finally:
        unregister_metric("n_sig")
    assert (table["n_sig"] > 0).any()
    assert list(table.columns) == ["perturbation", "des", "n_de_real", "n_de_pred", "n_sig"]


def test_registration_errors_name_the_fix(real, noisy):
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("x_metric", _sign_agreement))
        register_metric(Metric("x_metric", _sign_agreement))
    unregister_metric("x_metric")
    with pytest.raises(ValueError, match="built-in"):
        register_metric(Metric("mae", _max_abs_error), replace=True)
    with pytest.raises(ValueError, match="reserved"):
        register_metric(Metric("vcc", _sign_agreement))
    with pytest.raises(ValueError, match="clashes with the scorer of 'mae'"):
        register_metric(Metric("neg_mae", _sign_agreement))
    with pytest.raises(ValueError, match="identifier"):
        Metric("sign agreement", _sign_agreement)
    with pytest.raises(TypeError, match="Metric"):
        register_metric(_sign_agreement)
    with pytest.raises(ValueError, match="built-in metric and cannot be removed"):
        unregister_metric("des")
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        get_metric("nope")
    # A function returning the wrong shape or a mapping without its own column.
    for func, error in (
        (lambda ctx: np.zeros(2), ValueError),
        (lambda ctx: {"other": _sign_agreement(ctx)}, TypeError),
    ):
        register_metric(Metric("broken", func))
        try:
            with pytest.raises(error, match="broken"):
                perturbation_metrics(real, noisy, metrics=["broken"])
        finally:
            unregister_metric("broken")
    assert available_metrics() == BUILTIN


def test_scorer_carries_its_metric_to_workers():
    # A worker process (GridSearchCV(n_jobs=2)) unpickles the scorer without ever having
    # run the user's register_metric call.
    import pickle

    sim = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    model = MeanBaseline().fit(sim)
    register_metric(Metric("max_abs_error", _max_abs_error, greater_is_better=False))
    try:
        scorer = get_scorer("neg_max_abs_error")
        expected = scorer(model, sim)
        payload = pickle.dumps(scorer)
    finally:
        unregister_metric("max_abs_error")
    assert pickle.loads(payload)(model, sim) == expected


def test_report_direction_comes_from_the_registry():
    from sktx.report._record import lower_is_better

    # "spread" says nothing by its name; the registry's direction decides, by name or label
    register_metric(Metric("spread", _max_abs_error, greater_is_better=False, label="spread ↓"))
    try:
        assert lower_is_better("spread") and lower_is_better("spread ↓")
    finally:
        unregister_metric("spread")
    assert not lower_is_better("spread")
