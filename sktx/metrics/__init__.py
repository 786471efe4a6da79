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

__all__ = [
    "METRICS",
    "build_mean_baseline",
    "des_score",
    "mae_score",
    "pds_score",
    "pearson_delta_score",
    "perturbation_metrics",
    "top_de_mse_score",
    "vcc_score",
]
