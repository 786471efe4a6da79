"""The 2026 score: `sktx.metrics.vcc2026_evaluate` and `get_scorer("vcc2026")` (cell-eval2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import DATA, _need

import sktx
from sktx.baselines import MeanBaseline
from sktx.data import DataContractError
from sktx.metrics import VCC2026_METRICS, get_scorer, vcc2026_evaluate
from sktx.model_selection import make_query

pytest.importorskip("cell_eval2")

H1 = DATA / "vcc2025_h1_subset.h5ad"
KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
CELL_EVAL2 = Path(sys.executable).parent / "cell-eval2"


@pytest.fixture(scope="module")
def h1():
    return ad.read_h5ad(_need(H1))


@pytest.fixture(scope="module")
def pred(h1):
    data = sktx.prepare(h1, **KEYS)
    query = make_query(data, random_state=0)
    return MeanBaseline(**KEYS).fit(data).predict(query, output="counts", random_state=0)


@pytest.fixture(scope="module")
def result(h1, pred):
    return vcc2026_evaluate(h1, pred, **KEYS)


def test_result_has_the_six_metrics_b_r_scaled_and_score(result):
    for series in (result.metrics, result.baseline, result.replicate, result.scaled):
        assert list(series.index) == list(VCC2026_METRICS)
        assert np.isfinite(series.to_numpy()).all()
    assert result.score == pytest.approx(result.scaled.mean())
    assert result.engine == "pdex"
    assert "baseline" in result.summary()
    # the mean-response baseline cannot separate perturbations: PDS at the baseline
    assert result.baseline["pds_cosine"] == pytest.approx(result.metrics["pds_cosine"])


@pytest.mark.slow
def test_numbers_are_exactly_cell_eval2s_own(h1, pred, result, tmp_path):
    """`cell-eval2 baseline`, `run --anchor` and `score --anchor` with the same options."""
    import polars as pl

    real_path, pred_path = tmp_path / "real.h5ad", tmp_path / "pred.h5ad"
    h1.write_h5ad(real_path)
    ctrl = h1[h1.obs["target_gene"] == "non-targeting"]
    full = ad.concat([pred, ad.AnnData(ctrl.X, obs=ctrl.obs[["target_gene"]], var=pred.var)])
    full.obs_names_make_unique()
    full.obs = full.obs[["target_gene"]]
    full.write_h5ad(pred_path)
    common = [
        "--preset", "vcc2026", "--pert-col", "target_gene", "--control", "non-targeting",
        "--set", "de.backend=pdex", "--set", "device=cpu",
    ]  # fmt: skip

    def run(*args):
        subprocess.run([str(CELL_EVAL2), *args], check=True, capture_output=True)

    run("baseline", "-ar", str(real_path), "-o", str(tmp_path / "base"), *common)
    run("run", "-ap", str(pred_path), "-ar", str(real_path), "-o", str(tmp_path / "user"),
        "--anchor", *common)  # fmt: skip
    run("score", "--user-agg", str(tmp_path / "user" / "agg_results.csv"),
        "--baseline-agg", str(tmp_path / "base" / "baseline_agg.csv"),
        "--anchor", str(tmp_path / "user"), "-o", str(tmp_path / "score.csv"))  # fmt: skip
    scored = pd.read_csv(tmp_path / "score.csv").set_index("metric")["from_replicate"]
    user = pd.read_csv(tmp_path / "user" / "agg_results.csv").set_index("statistic").loc["mean"]
    base = pd.read_csv(tmp_path / "base" / "baseline_agg.csv").set_index("statistic").loc["mean"]
    anchor = pl.read_parquet(tmp_path / "user" / "anchor_agg.parquet").to_pandas()
    anchor = anchor.set_index("metric")["replicate"]
    for m in VCC2026_METRICS:
        assert result.metrics[m] == pytest.approx(user[m], rel=1e-12, abs=1e-15)
        assert result.baseline[m] == pytest.approx(base[m], rel=1e-12, abs=1e-15)
        assert result.replicate[m] == anchor[m]
        assert result.scaled[m] == pytest.approx(scored[m], rel=1e-12, abs=1e-15)
    assert result.score == pytest.approx(scored["avg_score"], rel=1e-12, abs=1e-15)


def test_contexts_are_scored_separately_and_averaged(h1, pred, result):
    # the same screen twice, as two contexts: each scores as the screen alone
    two_real = ad.concat({"A": h1, "B": h1}, label="line", index_unique="-")
    two_pred = ad.concat({"A": pred, "B": pred}, label="line", index_unique="-")
    res = vcc2026_evaluate(two_real, two_pred, **KEYS, context_key="line")
    per = res.per_context.set_index(["context", "metric"])["scaled"]
    assert per[("A", "score")] == pytest.approx(result.score)
    assert per[("B", "score")] == pytest.approx(result.score)
    assert res.score == pytest.approx(result.score)


def test_log1p_predictions_are_refused(h1, pred):
    norm = sktx.log_normalize(pred)
    log1p = ad.AnnData(norm.X, obs=pred.obs, var=pred.var, uns={"log1p": {"base": None}})
    with pytest.raises(DataContractError, match="raw integer counts"):
        vcc2026_evaluate(h1, log1p, **KEYS)


def test_other_genes_and_missing_perturbations_are_refused(h1, pred):
    with pytest.raises(DataContractError, match="exactly the real data's 1000 genes"):
        vcc2026_evaluate(h1, pred[:, :900].copy(), **KEYS)
    keep = pred.obs["target_gene"] != "SRC"
    with pytest.raises(DataContractError, match="pred lacks \\['SRC'\\]"):
        vcc2026_evaluate(h1, pred[keep.to_numpy()].copy(), **KEYS)


def test_missing_cell_eval2_names_the_extra(monkeypatch, h1, pred):
    monkeypatch.setitem(sys.modules, "cell_eval2", None)
    with pytest.raises(ImportError, match=r"pip install 'sktx\[eval\]'"):
        vcc2026_evaluate(h1, pred, **KEYS)


def test_get_scorer_vcc2026_scores_held_out_predictions_as_counts(h1):
    scorer = get_scorer("vcc2026")
    model = MeanBaseline(**KEYS).fit(h1)
    value = scorer(model, h1)
    assert np.isfinite(value)
    assert value == scorer.evaluate(model, h1).score  # seeded: the same counts each call


@pytest.mark.slow
def test_get_scorer_vcc2026_in_cross_validate():
    # simulated counts: the real samples here cannot be cross-validated by the 2026 rules
    # (H1 folds of 2-3 perturbations give a degenerate baseline; Datlinger's reference has
    # no measurable aggregate effect at 59 UMI per cell, see the next test)
    from sklearn.model_selection import cross_validate

    from sktx.datasets import make_perturbseq

    adata = make_perturbseq(n_cells=1500, n_genes=150, n_perturbations=12, random_state=0)
    cv = sktx.PerturbationSplit(n_splits=2, shuffle=True, random_state=0)
    out = cross_validate(
        MeanBaseline(), adata, cv=cv, scoring=get_scorer("vcc2026"), error_score="raise"
    )
    assert out["test_score"].shape == (2,) and np.isfinite(out["test_score"]).all()


@pytest.mark.slow
def test_datlinger_has_no_measurable_effect_by_the_2026_rules():
    """cell-eval2 refuses the shallow Datlinger screen; sktx passes its reason on."""
    from conftest import DATLINGER

    from sktx._counts import predict_output

    keys = {"perturbation_key": "target_gene", "control_label": "control"}
    data = sktx.prepare(ad.read_h5ad(_need(DATLINGER)), **keys)
    query = make_query(data, random_state=0)
    model = MeanBaseline(**keys).fit(data)
    pred = predict_output(model, query, output="counts", all_genes=True, random_state=0)
    with pytest.raises(ValueError, match="no measurable aggregate effect"):
        vcc2026_evaluate(data, pred, **keys)
