"""Virtual Cell Challenge metrics (cell-eval definitions), scikit-learn scorers, official numbers.

Functions take ``(real, pred, *, perturbation_key, control_label, cell_type_key)``;
scorers take ``(estimator, adata)`` for ``GridSearchCV(scoring=...)``;
:func:`vcc_evaluate` delegates to the ``cell-eval`` package (``pip install sktx[eval]``).
"""

from sktx.metrics._functions import (
    METRICS,
    build_mean_baseline,
    des_score,
    mae_score,
    pds_score,
    pearson_delta_score,
    perturbation_metrics,
    top_de_mse_score,
    vcc_score,
)
from sktx.metrics._official import VCCResult, vcc_evaluate
from sktx.metrics._scorers import (
    PerturbationScorer,
    des_scorer,
    get_scorer,
    mae_scorer,
    pds_scorer,
    pearson_delta_scorer,
    top_de_mse_scorer,
    vcc_scorer,
)

__all__ = [
    "METRICS",
    "PerturbationScorer",
    "VCCResult",
    "build_mean_baseline",
    "des_score",
    "des_scorer",
    "get_scorer",
    "mae_score",
    "mae_scorer",
    "pds_score",
    "pds_scorer",
    "pearson_delta_score",
    "pearson_delta_scorer",
    "perturbation_metrics",
    "top_de_mse_score",
    "top_de_mse_scorer",
    "vcc_evaluate",
    "vcc_score",
    "vcc_scorer",
]
