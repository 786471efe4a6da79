"""VCC metrics (cell-eval definitions) as fast vectorised functions.

Every function takes the real cells and the predicted cells as two AnnData
objects with the same genes; both hold control cells (``control_label``) and
the same set of perturbations. With ``cell_type_key`` each cell type is scored
on its own (as ``cell-eval run --celltype-col``) and results are averaged over
all (cell type, perturbation) rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial.distance import cdist

from sktx._pseudobulk import group_means
from sktx._validation import DataContractError, get_matrix, validate_adata
from sktx.metrics._de import DEResult, de_vs_control

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

#: Per-perturbation metrics computed by :func:`perturbation_metrics`.
METRICS = ("des", "pds", "mae", "pearson_delta", "top_de_mse")
_VCC = ("des", "pds", "mae")
_NEEDS_DE = {"des", "top_de_mse"}


def _dense(X, rows: np.ndarray) -> np.ndarray:
    sub = X[rows]
    return sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)


class _Context:
    """The real cells of one cell type, with their DE computed once and cached."""

    def __init__(self, X, labels: np.ndarray, genes: pd.Index, control_label: str) -> None:
        self.X = X
        self.labels = labels
        self.genes = genes
        self.control_label = control_label
        self.perts = np.array(sorted(set(labels.tolist()) - {control_label}), dtype=object)
        self.means, self.rows = _label_means(X, labels, self.perts, control_label)
        self._de: list[DEResult] | None = None

    def de(self) -> list[DEResult]:
        if self._de is None:
            self._de = _all_de(self.X, self.rows, self.means)
        return self._de


def _label_means(X, labels, perts, control_label):
    """Means of control (row 0) and each perturbation (rows 1..), and their cell rows."""
    order = [control_label, *perts]
    index = {lab: i for i, lab in enumerate(order)}
    codes = np.array([index.get(lab, -1) for lab in labels])
    rows = [np.flatnonzero(codes == i) for i in range(len(order))]
    return group_means(X, codes, len(order)), rows


def _all_de(X, rows, means) -> list[DEResult]:
    ctrl = _dense(X, rows[0])
    return [
        de_vs_control(_dense(X, r), ctrl, means[i + 1], means[0]) for i, r in enumerate(rows[1:])
    ]


def _evaluate(
    ctx: _Context, X, labels: np.ndarray, metrics: Sequence[str], fdr_threshold: float, n_top: int
) -> pd.DataFrame:
    pred_perts = set(labels.tolist()) - {ctx.control_label}
    real_perts = set(ctx.perts.tolist())
    if pred_perts != real_perts or ctx.control_label not in set(labels.tolist()):
        only_real = sorted(real_perts - pred_perts)
        only_pred = sorted(pred_perts - real_perts)
        raise DataContractError(
            "predicted and real cells must hold the same perturbations and control cells "
            f"`{ctx.control_label}` (as cell-eval requires). Missing from the prediction: "
            f"{only_real[:8]}; only in the prediction: {only_pred[:8]}. Predict every "
            "perturbation of the real data (see `sktx.model_selection.make_query`) and add "
            "the real control cells to the prediction."
        )
    means, rows = _label_means(X, labels, ctx.perts, ctx.control_label)
    real_delta = ctx.means[1:] - ctx.means[0]
    pred_delta = means[1:] - means[0]
    out = pd.DataFrame({"perturbation": ctx.perts.astype(str)})
    if "mae" in metrics:
        out["mae"] = np.abs(means[1:] - ctx.means[1:]).mean(axis=1)
    if "pearson_delta" in metrics:
        out["pearson_delta"] = _rowwise_pearson(pred_delta, real_delta)
    if "pds" in metrics:
        out["pds"] = _discrimination_l1(real_delta, pred_delta, ctx.perts, ctx.genes)
    if _NEEDS_DE & set(metrics):
        real_de = ctx.de()
        if "des" in metrics:
            pred_de = _all_de(X, rows, means)
            out["des"], out["n_de_real"], out["n_de_pred"] = _overlap_at_n(
                real_de, pred_de, fdr_threshold
            )
        if "top_de_mse" in metrics:
            out["top_de_mse"] = [
                np.mean((means[i + 1, top] - ctx.means[i + 1, top]) ** 2)
                for i, top in enumerate(_top_de_genes(de, n_top) for de in real_de)
            ]
    return out


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


def _contexts(real, perturbation_key, control_label, cell_type_key):
    """Split ``real`` into per-cell-type contexts: {cell_type: (_Context, row indices)}."""
    X = get_matrix(real)
    labels = real.obs[perturbation_key].astype(str).to_numpy()
    if cell_type_key is None:
        return {None: _Context(X, labels, pd.Index(real.var_names), control_label)}
    types = real.obs[cell_type_key].astype(str).to_numpy()
    out = {}
    for ct in sorted(set(types.tolist())):
        rows = np.flatnonzero(types == ct)
        out[ct] = _Context(X[rows], labels[rows], pd.Index(real.var_names), control_label)
    return out


def _check(real, pred, perturbation_key, control_label, cell_type_key) -> None:
    for obj in (real, pred):
        validate_adata(
            obj,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
        )
    if not np.array_equal(np.asarray(real.var_names), np.asarray(pred.var_names)):
        if set(real.var_names) == set(pred.var_names):
            fix = "reorder with `pred = pred[:, real.var_names]`"
        else:
            missing = sorted(set(real.var_names) - set(pred.var_names))[:5]
            fix = f"e.g. {missing} are missing; subset with `real = real[:, pred.var_names]`"
        raise DataContractError(
            f"real ({real.n_vars} genes) and predicted ({pred.n_vars} genes) data must have "
            f"the same `var_names` in the same order; {fix}."
        )


def _score_table(
    contexts, pred, perturbation_key, control_label, cell_type_key, metrics, fdr, n_top
) -> pd.DataFrame:
    X = get_matrix(pred)
    labels = pred.obs[perturbation_key].astype(str).to_numpy()
    types = None if cell_type_key is None else pred.obs[cell_type_key].astype(str).to_numpy()
    if types is not None and set(types.tolist()) != set(contexts):
        raise DataContractError(
            f"`obs[{cell_type_key!r}]` of the prediction has cell types "
            f"{sorted(set(types.tolist()))} but the real data has {sorted(contexts)}; predict "
            "every cell type of the real data."
        )
    frames = []
    for ct, ctx in contexts.items():
        rows = slice(None) if types is None else np.flatnonzero(types == ct)
        table = _evaluate(ctx, X[rows], labels[rows], metrics, fdr, n_top)
        if cell_type_key is not None:
            table.insert(0, "cell_type", ct)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def perturbation_metrics(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    metrics: Sequence[str] | None = None,
    fdr_threshold: float = 0.05,
    n_top_de: int = 20,
) -> pd.DataFrame:
    """All metrics, one row per (cell type, perturbation).

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression with identical ``var_names``; each
        holds control cells and every perturbation of the other.
    perturbation_key : str, default="target_gene"
        ``obs`` column with perturbation labels.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        Score each cell type on its own against its own controls.
    metrics : sequence of str, optional
        Subset of :data:`METRICS` (``"des"``, ``"pds"``, ``"mae"``,
        ``"pearson_delta"``, ``"top_de_mse"``); default all. The DE-based
        ones (``des``, ``top_de_mse``) cost most.
    fdr_threshold : float, default=0.05
        Benjamini-Hochberg level for DE genes.
    n_top_de : int, default=20
        Genes used by ``top_de_mse``.

    Returns
    -------
    DataFrame
        Columns ``[cell_type,] perturbation`` then one per metric; ``des`` adds
        ``n_de_real`` and ``n_de_pred`` (number of DE genes on each side).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=50, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> table = perturbation_metrics(real, real, metrics=["mae", "pds"])
    >>> float(table["mae"].max()), float(table["pds"].min())
    (0.0, 1.0)
    """
    metrics = list(METRICS if metrics is None else metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}.")
    _check(real, pred, perturbation_key, control_label, cell_type_key)
    contexts = _contexts(real, perturbation_key, control_label, cell_type_key)
    return _score_table(
        contexts,
        pred,
        perturbation_key,
        control_label,
        cell_type_key,
        metrics,
        fdr_threshold,
        n_top_de,
    )


def _mean_of(real, pred, metric: str, **kwargs) -> float:
    table = perturbation_metrics(real, pred, metrics=[metric], **kwargs)
    values = table[metric].to_numpy(dtype=float)
    if metric == "pearson_delta":
        values = np.nan_to_num(values, nan=0.0)  # constant delta: no correlation
    return float(values.mean())


def des_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    **kwargs,
) -> float:
    """Differential-expression score (cell-eval ``overlap_at_N``), best 1.

    Per perturbation: genes with BH FDR < 0.05 in a Mann-Whitney test against
    the controls, ranked by |log2 fold change|; the score is the overlap of the
    top-k predicted and top-k real DE genes divided by k, with k the number of
    real DE genes (0 when there is none).

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression, same ``var_names``; both hold
        control cells and the same perturbations.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Score each cell type against its own controls; average all rows.
    **kwargs
        ``fdr_threshold``, ``n_top_de`` (see :func:`perturbation_metrics`).

    Returns
    -------
    float
        Mean over (cell type, perturbation) rows.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> des_score(real, real)
    1.0
    """
    return _mean_of(
        real,
        pred,
        "des",
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        **kwargs,
    )


def pds_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    **kwargs,
) -> float:
    """Perturbation discrimination score (cell-eval ``discrimination_score_l1``), best 1.

    Per perturbation p: the L1 distance from the predicted delta of p (pseudobulk
    minus the prediction's controls) to the real delta of every perturbation,
    excluding the column of the gene named p; with r the number of real
    perturbations closer than p itself, the score is ``1 - r / N``.

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression, same ``var_names``; both hold
        control cells and the same perturbations.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Score each cell type against its own controls; average all rows.
    **kwargs
        ``fdr_threshold``, ``n_top_de`` (see :func:`perturbation_metrics`).

    Returns
    -------
    float
        Mean over (cell type, perturbation) rows.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> pds_score(real, real)
    1.0
    """
    return _mean_of(
        real,
        pred,
        "pds",
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        **kwargs,
    )


def mae_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    **kwargs,
) -> float:
    """Mean absolute error of pseudobulk log1p profiles (cell-eval ``mae``), best 0.

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression, same ``var_names``; both hold
        control cells and the same perturbations.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Score each cell type against its own controls; average all rows.
    **kwargs
        ``fdr_threshold``, ``n_top_de`` (see :func:`perturbation_metrics`).

    Returns
    -------
    float
        Mean over (cell type, perturbation) rows.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> mae_score(real, real)
    0.0
    """
    return _mean_of(
        real,
        pred,
        "mae",
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        **kwargs,
    )


def pearson_delta_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    **kwargs,
) -> float:
    """Pearson correlation of predicted and real pseudobulk deltas, best 1.

    Deltas are pseudobulk minus the pseudobulk of the same side's controls
    (cell-eval ``pearson_delta``). A constant predicted delta (e.g. "no
    change") has no correlation and counts as 0.

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression, same ``var_names``; both hold
        control cells and the same perturbations.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Score each cell type against its own controls; average all rows.
    **kwargs
        ``fdr_threshold``, ``n_top_de`` (see :func:`perturbation_metrics`).

    Returns
    -------
    float
        Mean over (cell type, perturbation) rows.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> round(pearson_delta_score(real, real), 6)
    1.0
    """
    return _mean_of(
        real,
        pred,
        "pearson_delta",
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        **kwargs,
    )


def top_de_mse_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    **kwargs,
) -> float:
    """MSE of pseudobulk log1p profiles on the top-20 real DE genes (GEARS-style), best 0.

    The top genes of each perturbation have the smallest real Mann-Whitney
    p-value (ties: larger |log2FC| first).

    Parameters
    ----------
    real, pred : AnnData
        Real and predicted log1p expression, same ``var_names``; both hold
        control cells and the same perturbations.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Score each cell type against its own controls; average all rows.
    **kwargs
        ``fdr_threshold``, ``n_top_de`` (see :func:`perturbation_metrics`).

    Returns
    -------
    float
        Mean over (cell type, perturbation) rows.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> top_de_mse_score(real, real)
    0.0
    """
    return _mean_of(
        real,
        pred,
        "top_de_mse",
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        **kwargs,
    )


def build_mean_baseline(
    real,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
):
    """The cell-mean baseline prediction (cell-eval ``build_base_mean_adata``).

    Every perturbed cell of ``real`` is replaced by the mean of the per-label
    pseudobulks of ``real`` (control included, as cell-eval does; per cell type
    with ``cell_type_key``); control cells are kept as they are.

    Parameters
    ----------
    real : AnnData
        Log1p expression with control cells.
    perturbation_key, control_label, cell_type_key
        As in :func:`perturbation_metrics`.

    Returns
    -------
    AnnData
        Same cells, obs and var as ``real``; dense ``X``.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=50, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> build_mean_baseline(real).shape == real.shape
    True
    """
    import anndata as ad

    X = get_matrix(real)
    labels = real.obs[perturbation_key].astype(str).to_numpy()
    if cell_type_key is None:
        types = np.zeros(real.n_obs, dtype=object)
    else:
        types = real.obs[cell_type_key].astype(str).to_numpy()
    out = np.empty(real.shape, dtype=np.float64)
    for ct in set(types.tolist()):
        rows = np.flatnonzero(types == ct)
        uniq, codes = np.unique(labels[rows], return_inverse=True)
        profile = group_means(X[rows], codes, len(uniq)).mean(axis=0)
        is_ctrl = labels[rows] == control_label
        out[rows[~is_ctrl]] = profile
        out[rows[is_ctrl]] = _dense(X, rows[is_ctrl])
    return ad.AnnData(out, obs=real.obs.copy(), var=real.var.copy())


def vcc_score(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    baseline=None,
    return_components: bool = False,
    fdr_threshold: float = 0.05,
):
    """Overall Virtual Cell Challenge score, scaled against the cell-mean baseline.

    With u the user's mean and b the baseline's mean of each VCC metric
    (cell-eval ``score_agg_metrics``): DES and PDS give ``(u - b) / (1 - b)``,
    MAE gives ``1 - u / b``; NaN counts as 0, each is clipped at 0, and the
    score is their mean (0 = no better than the baseline, 1 = perfect).

    Parameters
    ----------
    real, pred : AnnData
        As in :func:`perturbation_metrics`.
    perturbation_key, control_label, cell_type_key
        As in :func:`perturbation_metrics`.
    baseline : AnnData, optional
        The baseline's prediction; default :func:`build_mean_baseline` of ``real``
        (the mean of the real pseudobulks, as ``cell-eval baseline`` builds it).
    return_components : bool, default=False
        Also return a dict with the raw and scaled values of each metric.
    fdr_threshold : float, default=0.05

    Returns
    -------
    float or (float, dict)

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx._validation import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> vcc_score(real, real)
    1.0
    """
    keys = dict(
        perturbation_key=perturbation_key, control_label=control_label, cell_type_key=cell_type_key
    )
    _check(real, pred, **keys)
    if baseline is None:
        baseline = build_mean_baseline(real, **keys)
    else:
        _check(real, baseline, **keys)
    contexts = _contexts(real, **keys)
    args = (perturbation_key, control_label, cell_type_key, _VCC, fdr_threshold, 20)
    user = _score_table(contexts, pred, *args)[list(_VCC)].mean()
    base = _score_table(contexts, baseline, *args)[list(_VCC)].mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = {
            "des": (user["des"] - base["des"]) / (1.0 - base["des"]),
            "pds": (user["pds"] - base["pds"]) / (1.0 - base["pds"]),
            "mae": 1.0 - user["mae"] / base["mae"],
        }
    scaled = {k: max(0.0, float(np.nan_to_num(v, nan=0.0, neginf=0.0))) for k, v in scaled.items()}
    score = float(np.mean(list(scaled.values())))
    if not return_components:
        return score
    parts = {
        "user": {k: float(v) for k, v in user.items()},
        "baseline": {k: float(v) for k, v in base.items()},
        "scaled": scaled,
    }
    return score, parts
