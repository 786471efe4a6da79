"""VCC metrics: known answers, cross-check against cell-eval, scorers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu

from sktx.baselines import AdditiveBaseline, ControlBaseline, MeanBaseline
from sktx.data import DataContractError, log_normalize, prepare
from sktx.datasets import make_perturbseq
from sktx.metrics import (
    PerturbationScorer,
    build_mean_baseline,
    des_score,
    get_scorer,
    mae_score,
    mae_scorer,
    pds_score,
    pearson_delta_score,
    perturbation_metrics,
    top_de_mse_score,
    vcc_score,
)
from sktx.metrics._de import mannwhitneyu_columns

CTRL = "non-targeting"


@pytest.fixture(scope="module")
def real():
    adata = make_perturbseq(
        n_cells=900,
        n_genes=80,
        n_perturbations=6,
        n_combinations=2,
        effect_size=1.5,
        random_state=1,
    )
    return log_normalize(adata)


def _noisy(real, scale: float, seed: int = 0):
    """Real cells plus Gaussian noise on the perturbed cells (controls kept)."""
    rng = np.random.default_rng(seed)
    pred = real.copy()
    X = pred.X.toarray() if sp.issparse(pred.X) else np.array(pred.X)
    pert = (pred.obs["target_gene"] != CTRL).to_numpy()
    X[pert] = np.clip(X[pert] + rng.normal(0, scale, X[pert].shape), 0, None)
    pred.X = X
    return pred


def _shuffled(real, seed: int = 0):
    """Perturbation labels permuted among the perturbed cells."""
    pred = real.copy()
    labels = pred.obs["target_gene"].astype(str).to_numpy().copy()
    pert = labels != CTRL
    labels[pert] = np.random.default_rng(seed).permutation(labels[pert])
    pred.obs["target_gene"] = labels
    return pred


def test_mannwhitneyu_matches_scipy():
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(0.7, (40, 50)).astype(float))
    y = np.log1p(rng.poisson(0.9, (65, 50)).astype(float))
    x[:, 0] = y[:, 0] = 1.0  # all tied: p = 1 (scipy: NaN or 1 depending on version)
    u, p = mannwhitneyu_columns(x, y)
    ref = mannwhitneyu(x, y, axis=0, method="asymptotic", use_continuity=True)
    np.testing.assert_allclose(u, ref.statistic)
    np.testing.assert_allclose(p[1:], ref.pvalue[1:], rtol=1e-12, atol=1e-15)
    assert p[0] == 1.0


def test_perfect_prediction_scores_best(real):
    table = perturbation_metrics(real, real)
    assert (table["des"] == 1).all()
    assert (table["pds"] == 1).all()
    assert (table["mae"] == 0).all()
    np.testing.assert_allclose(table["pearson_delta"], 1.0)
    assert (table["top_de_mse"] == 0).all()
    assert (table["n_de_real"] > 0).any()
    assert vcc_score(real, real) == 1.0


def test_worse_predictions_score_worse(real):
    good, bad = _noisy(real, 0.05), _shuffled(real)
    for fn, sign in (
        (des_score, 1),
        (pds_score, 1),
        (pearson_delta_score, 1),
        (mae_score, -1),
        (top_de_mse_score, -1),
    ):
        perfect, g, b = (sign * fn(real, p) for p in (real, good, bad))
        assert perfect >= g > b, fn.__name__
    assert pds_score(real, bad) < 0.8
    assert vcc_score(real, good) > vcc_score(real, bad)


def test_pds_ignores_target_gene_column(real):
    # Corrupt only the column of the gene named like each single perturbation.
    pred = real.copy()
    X = pred.X.toarray() if sp.issparse(pred.X) else np.array(pred.X)
    labels = pred.obs["target_gene"].astype(str).to_numpy()
    for gene in set(labels) - {CTRL}:
        if gene in pred.var_names:
            X[labels == gene, pred.var_names.get_loc(gene)] += 50.0
    pred.X = X
    table = perturbation_metrics(real, pred, metrics=["pds", "mae"])
    assert (table["pds"] == 1.0).all()
    assert table["mae"].max() > 0.1


def test_cell_type_key_scores_each_cell_type_alone():
    adata = log_normalize(
        make_perturbseq(
            n_cells=700,
            n_genes=50,
            n_perturbations=3,
            n_combinations=1,
            n_cell_types=2,
            random_state=3,
        )
    )
    pred = _noisy(adata, 0.3)
    table = perturbation_metrics(adata, pred, cell_type_key="cell_type")
    assert set(table["cell_type"]) == {"type0", "type1"}
    for ct in ("type0", "type1"):
        r = adata[adata.obs["cell_type"] == ct]
        p = pred[pred.obs["cell_type"] == ct]
        alone = perturbation_metrics(r, p)
        got = table[table["cell_type"] == ct].drop(columns="cell_type").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone)


def test_inputs_not_modified(real):
    pred = _noisy(real, 0.2)
    before_real, before_pred = real.copy(), pred.copy()
    perturbation_metrics(real, pred)
    vcc_score(real, pred)
    np.testing.assert_array_equal(real.X.toarray(), before_real.X.toarray())
    np.testing.assert_array_equal(pred.X, before_pred.X)
    assert list(real.obs.columns) == list(before_real.obs.columns)


def test_errors_name_the_problem(real):
    with pytest.raises(DataContractError, match=r"same `var_names`.*reorder"):
        perturbation_metrics(real, real[:, real.var_names[::-1]].copy())
    first = sorted(set(real.obs["target_gene"]) - {CTRL})[0]
    partial = real[real.obs["target_gene"] != first].copy()
    with pytest.raises(DataContractError, match=f"Missing from the prediction: \\['{first}'\\]"):
        perturbation_metrics(real, partial)
    with pytest.raises(ValueError, match="unknown metrics"):
        perturbation_metrics(real, real, metrics=["r2"])


def test_mean_baseline_matches_cell_eval_builder(real):
    cell_eval = pytest.importorskip("cell_eval", reason="optional extra sktx[eval] not installed")
    ours = build_mean_baseline(real)
    theirs = cell_eval.build_base_mean_adata(real.copy(), pert_col="target_gene", control_pert=CTRL)
    pert = (real.obs["target_gene"] != CTRL).to_numpy()
    theirs_pert = theirs[theirs.obs["target_gene"] != CTRL]
    theirs_X = theirs_pert.X.toarray() if sp.issparse(theirs_pert.X) else theirs_pert.X
    np.testing.assert_allclose(ours.X[pert][0], theirs_X[0], rtol=1e-6)  # X is float32
    # The estimator gives the same profile when fitted on the same cells.
    model = MeanBaseline().fit(real)
    np.testing.assert_allclose(model.mean_profiles_.iloc[0], ours.X[pert][0], atol=1e-12)


# Tolerances of the cross-check: DES and PDS are rank-based and agree exactly on
# these data; MAE and Pearson differ only by float32 round-off inside cell-eval.
TOL_EXACT = 1e-9
TOL_FLOAT = 1e-6


def test_agrees_with_cell_eval(real, tmp_path):
    pytest.importorskip("cell_eval", reason="optional extra sktx[eval] not installed")
    from sktx.metrics import vcc_evaluate

    pred = _noisy(real, 0.3)
    official = vcc_evaluate(
        pred, real, perturbation_key="target_gene", control_label=CTRL, profile="minimal"
    )
    theirs = official.results.set_index("perturbation")
    ours = perturbation_metrics(real, pred).set_index("perturbation").loc[theirs.index]
    assert ours["n_de_real"].sum() > 0 and ours["des"].between(0.05, 0.99).any()
    for mine, name, tol in (
        ("des", "overlap_at_N", TOL_EXACT),
        ("pds", "discrimination_score_l1", TOL_EXACT),
        ("mae", "mae", TOL_FLOAT),
        ("pearson_delta", "pearson_delta", TOL_FLOAT),
    ):
        np.testing.assert_allclose(ours[mine], theirs[name], atol=tol, err_msg=mine)
    np.testing.assert_array_equal(ours["n_de_real"], theirs["de_nsig_counts_real"])
    # The overall score: cell-eval's score_agg_metrics vs our vcc_score.
    vcc = vcc_evaluate(pred, real, perturbation_key="target_gene", control_label=CTRL)
    assert vcc.score == pytest.approx(vcc_score(real, pred), abs=TOL_FLOAT)
    assert 0 < vcc.score < 1
    # prepared data (what the scorers' real_and_predicted returns) are scored alike
    keys = dict(perturbation_key="target_gene", control_label=CTRL)
    again = vcc_evaluate(prepare(pred, **keys), prepare(real, **keys), **keys)
    assert again.score == pytest.approx(vcc.score, abs=TOL_FLOAT)  # cell-eval float32


def test_scorers_on_a_fitted_model(sim):
    model = AdditiveBaseline().fit(sim)
    for name in ("des", "pds", "pearson_delta", "vcc"):
        value = get_scorer(name)(model, sim)
        assert 0.0 <= value <= 1.0, name
    assert mae_scorer(model, sim) < 0
    assert get_scorer("mae")(model, sim) == mae_scorer(model, sim)
    # A model that saw every perturbation beats predicting no change.
    control = ControlBaseline().fit(sim)
    assert get_scorer("pearson_delta")(model, sim) > get_scorer("pearson_delta")(control, sim)
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("accuracy")
    # The scored pair is available for other metrics (or cell-eval).
    real, pred = get_scorer("pds").real_and_predicted(model, sim)
    assert real.n_obs == pred.n_obs == sim.n_obs
    assert perturbation_metrics(real, pred)["pds"].mean() == get_scorer("pds")(model, sim)


def test_scorer_reads_keys_from_estimator(norman):
    k562 = norman[norman.obs["cell_type"] == "k562"]
    model = MeanBaseline(perturbation_key="perturbation", control_label="control").fit(k562)
    value = PerturbationScorer("pds")(model, k562)
    assert 0.0 < value <= 1.0
    explicit = PerturbationScorer("pds", perturbation_key="perturbation", control_label="control")(
        model, k562
    )
    assert explicit == value


def test_each_input_is_checked_once(real, monkeypatch):
    import sktx.metrics._input as metrics_input
    from sktx.report import evaluate_predictions

    checked = []
    original = metrics_input.check

    def counting(adata, **keys):
        checked.append(id(adata))
        return original(adata, **keys)

    monkeypatch.setattr(metrics_input, "check", counting)
    pred = _noisy(real, 0.2)
    perturbation_metrics(real, pred)
    assert checked == [id(real), id(pred)]
    checked.clear()
    des_score(real, pred)
    assert checked == [id(real), id(pred)]
    checked.clear()
    vcc_score(real, pred)  # the baseline built from `real` needs no check
    assert checked == [id(real), id(pred)]
    checked.clear()
    base = build_mean_baseline(real)
    vcc_score(real, pred, baseline=base)
    assert checked == [id(real), id(pred), id(base)]
    checked.clear()
    # The report: the real cells once, each prediction once, the baseline once.
    evaluate_predictions(real, {"noisy": pred, "mean": base})
    assert len(checked) == 4
