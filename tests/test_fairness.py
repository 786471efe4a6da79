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
