"""Fair comparisons: baselines built like the model's cells, ties as ties, no NaN in a grid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sktx.metrics import get_scorer
from sktx.metrics._scorers import FallbackWarning
from sktx.model_selection import PerturbationSplit

NORMAN = {"perturbation_key": "perturbation", "control_label": "control"}


@pytest.fixture(scope="module")
def k562(norman):
    return norman[(norman.obs["cell_type"] == "k562").to_numpy()].copy()


def test_python_and_cli_defaults_of_on_unknown_target_agree():
    from sktx.cli._estimator import _build_estimator
    from sktx.cli._runner import TrainConfig
    from sktx.regressor import PerturbationRegressor

    assert PerturbationRegressor().on_unknown_target == "warn"
    pipe = _build_estimator(TrainConfig(data="demo", out="unused"), quiet=True)
    assert pipe.named_steps["model"].on_unknown_target == "warn"


def test_grid_over_n_genes_with_go_bp_returns_finite_scores(k562, genesets_dir):
    from sktx.regressor import PerturbationRegressor
    from sktx.selection import GeneSelector

    # IER5L, a held-out K562 target, is neither measured nor in GO BP: no embedding
    model = PerturbationRegressor(
        **NORMAN,
        gene_sets=str(genesets_dir / "go_bp_2021.gmt"),
        d_model=8,
        n_layers=1,
        max_epochs=1,
        set_size=16,
        n_jobs=1,
        random_state=0,
    )
    pipe = Pipeline([("select", GeneSelector(**NORMAN)), ("model", model)])
    scorer = get_scorer("vcc")
    search = GridSearchCV(
        pipe,
        {"select__n_genes": [60, 120]},
        cv=PerturbationSplit(2, shuffle=True, random_state=0, **NORMAN),
        scoring=scorer,
        refit=False,
        error_score="raise",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(k562)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all(), scores
    # the unembeddable perturbation was scored (as the model's fallback) and counted
    counted = [r for r in scorer.fallbacks_ if r["n_fallback"]]
    assert counted and all(r["fallback_perturbations"] == ["IER5L"] for r in counted)
    assert all(r["n_perturbations"] > r["n_fallback"] for r in scorer.fallbacks_)
    assert any(
        issubclass(w.category, FallbackWarning) and "IER5L" in str(w.message) for w in caught
    )


# Baselines built like the model's cells ---------------------------------------------------


def test_cli_baselines_build_cells_as_the_model_and_share_its_gene_sets(genesets_dir):
    from sktx.cli._runner import BASELINE_CELLS, TrainConfig, _baselines

    gmt = str(genesets_dir / "go_bp_2021.gmt")
    cfg = TrainConfig(data="demo", out="unused", gene_sets=[gmt])
    baselines = _baselines(cfg)
    assert BASELINE_CELLS == "controls" and "knn" in baselines
    for name, base in baselines.items():
        params = base.get_params()
        if "cells" in params:  # ControlBaseline returns the controls themselves
            assert params["cells"] == "controls", name
    assert baselines["knn"].gene_sets == [gmt]
    assert baselines["linear"].prior_gene_sets == [gmt]


@pytest.fixture
def linear_model(monkeypatch):
    """The CLI's network swapped for a linear baseline that builds cells as the model does."""
    from dataclasses import asdict

    from sktx.baselines import LinearBaseline
    from sktx.cli import _estimator

    monkeypatch.setattr(
        _estimator,
        "_build_estimator",
        lambda cfg, quiet: LinearBaseline(cells="controls", **asdict(cfg.keys)),
    )


@pytest.mark.slow  # a whole `sktx train` run on Norman K562 (~20 s alone, more when shared)
def test_run_report_uses_fair_baselines_and_says_so(k562, tmp_path, linear_model):
    import pandas as pd

    from sktx.cli._io import Keys
    from sktx.cli._runner import TrainConfig, run_experiment

    path = tmp_path / "k562.h5ad"  # K562 against its own controls
    k562.write_h5ad(path)
    keys = Keys(perturbation_key="perturbation", control_label="control", cell_type_key=None)
    cfg = TrainConfig(data=str(path), out=str(tmp_path / "run"), cells=None, keys=keys)
    result = run_experiment(cfg)
    metrics = result.metrics
    # real data: profile-built baselines score DES 0; built from controls they do not
    for name in ("additive", "additive_joint", "knn"):
        assert metrics.loc[name, "DES"] > 0, name
    md = (result.run_dir / "report.md").read_text()
    assert "baseline cells | controls" in md
    assert "best baseline by VCC score" in md or "best baselines by VCC score" in md
    # the per-perturbation table: truly DE genes per held-out perturbation
    assert "## Per held-out perturbation: PerturbationRegressor vs" in md
    per_pert = pd.read_csv(result.run_dir / "per_perturbation.csv")
    ours = per_pert[per_pert["model"] == "PerturbationRegressor"]
    for _, row in ours.iterrows():
        assert f"| {row['perturbation']} | {int(row['n_de_real'])} |" in md
    # the spread: bootstrap intervals over the held-out perturbations
    assert "95% bootstrap interval" in md
    assert (result.run_dir / "reference_per_perturbation.csv").exists()


def test_evaluate_mean_baseline_builds_cells_from_controls(norman_path, tmp_path):
    import anndata as ad
    import pandas as pd
    from typer.testing import CliRunner

    from sktx.baselines import AdditiveBaseline
    from sktx.cli import app
    from sktx.model_selection import make_query

    adata = ad.read_h5ad(norman_path)
    k562 = adata[(adata.obs["cell_type"] == "k562").to_numpy()].copy()
    labels = k562.obs["perturbation"].astype(str)
    held = ["SGK1", "MAP2K3", "TGFBR2"]
    train = k562[~labels.isin(held).to_numpy()].copy()
    real = k562[labels.isin([*held, "control"]).to_numpy()].copy()
    pred = AdditiveBaseline(cells="controls", **NORMAN).fit(train)
    pred = pred.predict(make_query(real, **NORMAN))
    real.write_h5ad(tmp_path / "real.h5ad")
    pred.write_h5ad(tmp_path / "pred.h5ad")
    runner, out = CliRunner(), {}
    for cells in ("controls", "profile"):
        args = ["evaluate", "--real", tmp_path / "real.h5ad", "--pred", tmp_path / "pred.h5ad"]
        args += ["--perturbation-key", "perturbation", "--control-label", "control"]
        args += ["--baseline-cells", cells, "--out", tmp_path / cells, "--quiet"]
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        out[cells] = pd.read_csv(tmp_path / f"{cells}.csv", index_col="model")
        per_pert = pd.read_csv(tmp_path / f"{cells}_per_perturbation.csv")
        out[cells + "_de"] = per_pert.loc[per_pert["model"] == "mean", "n_de_pred"]
    # same pseudobulk either way (PDS, MAE) ...
    for col in ("PDS", "MAE"):
        assert out["controls"].loc["mean", col] == pytest.approx(out["profile"].loc["mean", col])
    # ... but one constant profile per perturbation makes ~140 of 500 genes "DE" against
    # the real controls (the real cells: 0-1), the controls carried to it only a few
    assert out["profile_de"].min() > 100
    assert out["controls_de"].max() < 10


# Ties as ties; intervals --------------------------------------------------------------------


def test_best_baseline_is_chosen_by_vcc_and_ties_are_ties():
    import pandas as pd

    from sktx.report._compare import best_baselines, compare_to_best

    metrics = pd.DataFrame(
        {"DES": [0.19, 0.0, 0.0, 0.21], "MAE": [0.008, 0.009, 0.0085, 0.007],
         "VCC": [0.2, 0.0, 0.0, 0.25]},
        index=["model", "control", "mean", "additive_joint"],
    )  # fmt: skip
    assert best_baselines(metrics, "model") == ["additive_joint"]
    lines = compare_to_best(metrics, "model")
    assert lines[0] == "best baseline by VCC score: additive_joint (0.2500)"
    # every metric against the best-by-VCC baseline, not against whichever baseline tops a column
    assert lines[1] == "DES 0.1900 does not beat the best baseline (additive_joint: 0.2100)"
    assert "does not beat" in lines[2] and "does not beat" in lines[3]
    # baselines tied at VCC 0 are named together; equal values are ties, never wins
    tied = metrics.drop(index="additive_joint")
    tied.loc["model", "MAE"] = 0.0085
    lines = compare_to_best(tied, "model")
    assert lines[0] == "best baselines by VCC score, tied at 0: control, mean"
    assert lines[2] == "MAE 0.0085 ties with the best baseline (mean: 0.0085)"


def test_bootstrap_vcc_matches_the_reported_score_and_brackets_it(sim):
    from sktx.data import log_normalize
    from sktx.metrics import build_mean_baseline
    from sktx.report import evaluate_predictions
    from sktx.report._compare import bootstrap_intervals

    real = log_normalize(sim)
    rng = np.random.default_rng(0)
    noisy = real.copy()
    noisy.X = noisy.X.multiply(rng.uniform(0.6, 1.4, size=noisy.shape)).tocsr()
    out = evaluate_predictions(real, {"noisy": noisy, "mean": build_mean_baseline(real)})
    iv = bootstrap_intervals(out["per_perturbation"], out["reference"], pairs=[("noisy", "mean")])
    got = iv[(iv["model"] == "noisy")].set_index("metric")
    for col in ("DES", "PDS", "MAE", "VCC"):
        assert got.loc[col, "mean"] == pytest.approx(out["metrics"].loc["noisy", col], abs=1e-9)
        assert got.loc[col, "low"] <= got.loc[col, "mean"] <= got.loc[col, "high"]
    diff = iv[iv["model"] == "noisy - mean"].set_index("metric")
    expected = out["metrics"].loc["noisy", "PDS"] - out["metrics"].loc["mean", "PDS"]
    assert diff.loc["PDS", "mean"] == pytest.approx(expected)
