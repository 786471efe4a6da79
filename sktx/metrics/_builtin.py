"""The five built-in VCC metrics (cell-eval definitions), registered in display order.

Each function takes a :class:`~sktx.metrics.MetricContext` and returns one value
per perturbation; see docs/evaluation.md for the definitions.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from sktx.metrics._de import DEResult
from sktx.metrics._registry import Metric, MetricContext, _register_builtin

__all__: list[str] = []


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def _discrimination_l1(real_delta, pred_delta, perts, genes) -> np.ndarray:
    dist = cdist(pred_delta, real_delta, metric="cityblock")
    # cell-eval drops the column of the gene named like the perturbation label.
    gene_pos = {g: i for i, g in enumerate(genes)}
    for p, label in enumerate(perts):
        g = gene_pos.get(label)
        if g is not None:
            dist[p] -= np.abs(real_delta[:, g] - pred_delta[p, g])
    own = np.diag(dist)
    rank = (dist < own[:, None]).sum(axis=1)
    return 1.0 - rank / len(perts)


def _overlap_at_n(real_de, pred_de, fdr_threshold):
    real_top = [d.ranked_significant(fdr_threshold) for d in real_de]
    pred_top = [d.ranked_significant(fdr_threshold) for d in pred_de]
    n_real = np.array([t.size for t in real_top])
    n_pred = np.array([t.size for t in pred_top])
    if n_real.sum() == 0 or n_pred.sum() == 0:
        # cell-eval: no significant gene anywhere on one side -> 0 for all.
        return np.zeros(len(real_de)), n_real, n_pred
    scores = np.zeros(len(real_de))
    for i, (r, p) in enumerate(zip(real_top, pred_top, strict=True)):
        if r.size:
            scores[i] = np.intersect1d(r, p[: r.size]).size / r.size
    return scores, n_real, n_pred


def _top_de_genes(de: DEResult, n_top: int) -> np.ndarray:
    # Smallest p-value first, larger |log2FC| breaks ties.
    return np.lexsort((-np.abs(de.log2_fold_change), de.pvalue))[:n_top]


def _des(ctx: MetricContext) -> dict[str, np.ndarray]:
    des, n_real, n_pred = _overlap_at_n(ctx.real_de, ctx.pred_de, ctx.fdr_threshold)
    return {"des": des, "n_de_real": n_real, "n_de_pred": n_pred}


def _pds(ctx: MetricContext) -> np.ndarray:
    return _discrimination_l1(ctx.real_delta, ctx.pred_delta, ctx.perturbations, ctx.genes)


def _mae(ctx: MetricContext) -> np.ndarray:
    return np.abs(ctx.pred_means - ctx.real_means).mean(axis=1)


def _pearson_delta(ctx: MetricContext) -> np.ndarray:
    return _rowwise_pearson(ctx.pred_delta, ctx.real_delta)


def _top_de_mse(ctx: MetricContext) -> np.ndarray:
    tops = (_top_de_genes(de, ctx.n_top_de) for de in ctx.real_de)
    return np.array(
        [np.mean((ctx.pred_means[i, t] - ctx.real_means[i, t]) ** 2) for i, t in enumerate(tops)]
    )


_register_builtin(
    Metric(
        "des",
        _des,
        needs_de=True,
        label="DES",
        in_vcc=True,
        doc="""Differential-expression score (cell-eval ``overlap_at_N``), best 1.

Per perturbation: genes with BH FDR < 0.05 in a Mann-Whitney test against
the controls, ranked by |log2 fold change|; the score is the overlap of the
top-k predicted and top-k real DE genes divided by k, with k the number of
real DE genes (0 when there is none).""",
    )
)
_register_builtin(
    Metric(
        "pds",
        _pds,
        label="PDS",
        in_vcc=True,
        doc="""Perturbation discrimination score (cell-eval ``discrimination_score_l1``), best 1.

Per perturbation p: the L1 distance from the predicted delta of p (pseudobulk
minus the prediction's controls) to the real delta of every perturbation,
excluding the column of the gene named p; with r the number of real
perturbations closer than p itself, the score is ``1 - r / N``.""",
    )
)
_register_builtin(
    Metric(
        "mae",
        _mae,
        greater_is_better=False,
        label="MAE",
        in_vcc=True,
        doc="Mean absolute error of pseudobulk log1p profiles (cell-eval ``mae``), best 0.",
    )
)
_register_builtin(
    Metric(
        "pearson_delta",
        _pearson_delta,
        nan_value=0.0,  # a constant predicted delta has no correlation
        doc="""Pearson correlation of predicted and real pseudobulk deltas, best 1.

Deltas are pseudobulk minus the pseudobulk of the same side's controls
(cell-eval ``pearson_delta``). A constant predicted delta (e.g. "no
change") has no correlation and counts as 0.""",
    )
)
_register_builtin(
    Metric(
        "top_de_mse",
        _top_de_mse,
        greater_is_better=False,
        needs_de=True,
        label="top20_DE_MSE",
        doc="""MSE of pseudobulk log1p profiles on the top-20 real DE genes (GEARS-style), best 0.

The top genes of each perturbation have the smallest real Mann-Whitney
p-value (ties: larger |log2FC| first).""",
    )
)
