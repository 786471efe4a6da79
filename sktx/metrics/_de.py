"""Vectorised differential expression as cell-eval (via pdex) computes it.

cell-eval calls ``pdex(adata, mode="ref", is_log1p=True, geometric_mean=True,
epsilon=0)``: for every perturbation a two-sided Mann-Whitney U test of each
gene against the control cells (asymptotic normal approximation with tie and
continuity correction), Benjamini-Hochberg FDR over the genes of that
perturbation, and ``log2_fold_change = log2(expm1(mean_p) / expm1(mean_ctrl))``
of the log1p means. Here the U test runs over all genes at once in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr
from scipy.stats import false_discovery_control

__all__ = ["DEResult", "de_vs_control", "mannwhitneyu_columns"]


def mannwhitneyu_columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U test of every column of ``x`` against ``y``.

    Same numbers as ``scipy.stats.mannwhitneyu(x, y, axis=0,
    method="asymptotic")`` (tie and continuity correction), except that a
    column where all values are tied gets p = 1 (as pdex/numba-mwu) instead of
    NaN. One argsort of the stacked matrix ranks all genes at once.

    Parameters
    ----------
    x : ndarray of shape (n1, n_genes)
    y : ndarray of shape (n2, n_genes)

    Returns
    -------
    statistic : ndarray of shape (n_genes,)
        U statistic of ``x``.
    pvalue : ndarray of shape (n_genes,)

    Examples
    --------
    >>> import numpy as np
    >>> u, p = mannwhitneyu_columns(np.array([[1.0], [2.0]]), np.array([[3.0], [4.0]]))
    >>> float(u[0])
    0.0
    """
    n1, n2 = x.shape[0], y.shape[0]
    n = n1 + n2
    z = np.concatenate([x, y], axis=0).T
    n_genes = z.shape[0]
    order = np.argsort(z, axis=1, kind="stable")
    s = np.take_along_axis(z, order, axis=1)
    # Runs of equal values (ties) per gene, in row-major order of the sorted matrix.
    starts = np.ones((n_genes, n), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    flat_starts = starts.ravel()
    run_id = np.cumsum(flat_starts) - 1
    first = np.flatnonzero(flat_starts)
    lengths = np.diff(np.append(first, n_genes * n)).astype(np.float64)
    avg_rank = (first % n) + (lengths + 1.0) / 2.0
    ranks = avg_rank[run_id].reshape(n_genes, n)
    rank_sum = np.where(order < n1, ranks, 0.0).sum(axis=1)
    tie_term = np.bincount(first // n, weights=lengths**3 - lengths, minlength=n_genes)
    u1 = rank_sum - n1 * (n1 + 1) / 2.0
    u = np.maximum(u1, n1 * n2 - u1)
    var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        zscore = (u - n1 * n2 / 2.0 - 0.5) / np.sqrt(var)
        pvalue = np.clip(2.0 * ndtr(-zscore), 0.0, 1.0)
    pvalue[~(var > 0)] = 1.0
    return u1, pvalue


@dataclass(frozen=True)
class DEResult:
    """Differential expression of one perturbation against its controls.

    Attributes
    ----------
    log2_fold_change : ndarray of shape (n_genes,)
        ``log2(expm1(mean_p) / expm1(mean_ctrl))`` (0 where both are 0; +-inf kept).
    pvalue, fdr : ndarray of shape (n_genes,)
        Mann-Whitney p-values and Benjamini-Hochberg adjusted values.
    """

    log2_fold_change: np.ndarray
    pvalue: np.ndarray
    fdr: np.ndarray

    def ranked_significant(self, fdr_threshold: float = 0.05) -> np.ndarray:
        """Indices of genes with FDR below the threshold, by decreasing |log2FC|.

        cell-eval stores FDR and |log2FC| as float32 and ranks with a stable
        ("ordinal") sort, so ties keep gene order; the same is done here.
        """
        sig = np.flatnonzero(self.fdr.astype(np.float32) < np.float32(fdr_threshold))
        abs_lfc = np.abs(self.log2_fold_change[sig]).astype(np.float32)
        return sig[np.argsort(-abs_lfc, kind="stable")]


def de_vs_control(
    pert: np.ndarray, ctrl: np.ndarray, pert_mean: np.ndarray, ctrl_mean: np.ndarray
) -> DEResult:
    """DE of dense log1p cells ``pert`` against ``ctrl`` (means given as log1p means)."""
    _, pvalue = mannwhitneyu_columns(pert, ctrl)
    fdr = false_discovery_control(pvalue)
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2(np.expm1(pert_mean) / np.expm1(ctrl_mean))
    lfc[np.isnan(lfc)] = 0.0
    return DEResult(lfc, pvalue, fdr)
