"""Virtual Cell Challenge metrics (cell-eval definitions), scikit-learn scorers, official numbers.

Functions take ``(real, pred, *, perturbation_key, control_label, cell_type_key)``;
scorers take ``(estimator, adata)`` for ``GridSearchCV(scoring=...)``;
:func:`vcc_evaluate` delegates to the ``cell-eval`` package (``pip install sktx[eval]``),
:func:`vcc2026_evaluate` to ``cell-eval2`` (the 2026 rules, raw counts).
Every per-perturbation metric is a :class:`Metric` in a registry: one
:func:`register_metric` call adds a metric to :func:`perturbation_metrics`,
:func:`get_scorer` and the report tables.
"""

from sktx.metrics._official import VCCResult, vcc_evaluate
from sktx.metrics._registry import (
    Metric,
    MetricContext,
    available_metrics,
    get_metric,
    register_metric,
    unregister_metric,
)
from sktx.metrics._scorers import (
    FallbackWarning,
    PerturbationScorer,
    des_scorer,
    get_scorer,
    mae_scorer,
    pds_scorer,
    pearson_delta_scorer,
    top_de_mse_scorer,
    vcc_scorer,
)
from sktx.metrics._scores import (
    build_mean_baseline,
    des_score,
    mae_score,
    pds_score,
    pearson_delta_score,
    top_de_mse_score,
    vcc_score,
)
from sktx.metrics._table import METRICS, perturbation_metrics
from sktx.metrics._vcc2026 import (
    VCC2026_METRICS,
    VCC2026Result,
    VCC2026Scorer,
    vcc2026_evaluate,
)

__all__ = [
    "METRICS",
    "VCC2026_METRICS",
    "FallbackWarning",
    "Metric",
    "MetricContext",
    "PerturbationScorer",
    "VCC2026Result",
    "VCC2026Scorer",
    "VCCResult",
    "available_metrics",
    "build_mean_baseline",
    "des_score",
    "des_scorer",
    "get_metric",
    "get_scorer",
    "mae_score",
    "mae_scorer",
    "pds_score",
    "pds_scorer",
    "pearson_delta_score",
    "pearson_delta_scorer",
    "perturbation_metrics",
    "register_metric",
    "top_de_mse_score",
    "top_de_mse_scorer",
    "unregister_metric",
    "vcc2026_evaluate",
    "vcc_evaluate",
    "vcc_score",
    "vcc_scorer",
]
