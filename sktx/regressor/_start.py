"""The regressor's start: joint additive effects, unseen targets from similar fitted ones.

The joint additive fit (:mod:`sktx._effects`) gives a target never fitted the
typical effect ``shared``: every unseen single is predicted alike. Here an
unseen target ``t`` gets

    c * (shared + alpha * sum_f w(t, f) specific[f])

over its ``n_neighbors`` most similar fitted targets ``f`` (weights ``w``
summing to one, similarity as in :class:`~sktx.baselines.KNNBaseline`: Jaccard
index of shared gene-set membership mixed with co-expression), where

- ``alpha`` in [0, 1] says how much of the neighbours' departure from the
  typical effect carries over (0: the additive start; 1: the KNN baseline), and
- ``c`` in [0, 1] shrinks the whole unseen part towards "no change" (as the
  mean baseline's ``K / (K + 1)`` does), which is what the mean absolute error
  rewards when unseen effects are mostly noise around the typical one.

The regressor's ``start="knn"`` fixes ``alpha = c = 1`` (``knn=1.0, shrink=False``:
KNNBaseline's rule), which the 2026 metrics reward; the default ``"shrunk"`` fits
both, in closed form by least squares over the fitted labels, each
predicted leave-one-out: a target seen only in label ``i`` is unseen in the fit
without ``i``, so label ``i``'s start is its leave-one-label-out additive
prediction with those targets replaced as above (the typical effect of the fit
without ``i``, and neighbours other than the label's own targets). The same
leave-one-out starts are the training baselines, so training learns what the
start misses on unseen perturbations, and the factors never see a label's own
delta in its own prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sktx.baselines._knn import _MIN_SIMILARITY, _membership
from sktx.data import split_targets
from sktx.genesets import read_gene_sets
from sktx.regressor._crossfit import gene_residual_scale, residual_scale

__all__ = ["Start", "TargetSimilarity", "fit_start", "least_squares_factor", "set_membership"]

#: KNNBaseline's defaults (not tuned here).
N_NEIGHBORS = 5
COEXPRESSION_WEIGHT = 0.5


def set_membership(sets: dict) -> tuple[list[str] | None, sp.csr_matrix | None]:
    """Upper-case genes and their gene x set 0/1 CSR matrix; ``(None, None)`` without sets.

    ``sets`` as :func:`~sktx.genesets.read_gene_sets` returns them (name -> genes).

    Examples
    --------
    >>> genes, M = set_membership({"s1": ["a", "B"], "s2": ["b"], "empty": []})
    >>> list(genes), M.toarray().tolist()
    (['A', 'B'], [[1.0, 0.0], [1.0, 1.0]])
    """
    sets = {k: v for k, v in sets.items() if len(v)}
    if not sets:
        return None, None
    genes, M = _membership(sets)
    return [str(g) for g in genes], sp.csr_matrix(M)


class TargetSimilarity:
    """Similarity of targets: gene-set Jaccard mixed with co-expression (KNNBaseline's rule).

    ``s = (1 - w) * jaccard + w * max(corr, 0)`` when both targets are measured
    genes, else ``jaccard``. ``corr`` is the correlation of the two genes in the
    control cells (``coexpression``, stored at fit time for every gene against each
    fitted target, so prediction needs no cells), as KNNBaseline's. Without it
    (models saved before it was stored) it is the cosine of the genes' PCA
    loadings, a low-rank estimate that overstates the correlation of genes the
    top components barely explain.

    Parameters
    ----------
    gene_sets : gene-set spec
        As ``read_gene_sets`` takes it (``False``: none).
    genes : list of str
        Measured genes, rows of ``loadings``.
    loadings : ndarray of shape (n_genes, k)
    coexpression_weight : float
    membership : tuple, optional
        ``(genes, matrix)`` as :func:`set_membership` returns it, instead of
        reading ``gene_sets``.
    coexpression : tuple, optional
        ``(targets, corr)``: ``corr[i, j]`` is the control-cell correlation of
        ``genes[i]`` with fitted target ``targets[j]``.

    Examples
    --------
    >>> import numpy as np
    >>> sim = TargetSimilarity({"s": ["A", "B"]}, ["A", "B"], np.eye(2), 0.5)
    >>> sim(["A"], ["B"]).round(2).tolist()  # Jaccard 1, orthogonal loadings
    [[0.5]]
    """

    def __init__(
        self,
        gene_sets,
        genes,
        loadings,
        coexpression_weight=COEXPRESSION_WEIGHT,
        *,
        membership=None,
        coexpression=None,
    ):
        # a fitted model passes the membership it stored at fit time, so predictions
        # never re-read the gene-set files (moved, edited or absent on another machine)
        if membership is None:
            membership = set_membership(read_gene_sets(gene_sets))
        self._set_genes, self._M = membership
        self._set_row = (
            {} if self._set_genes is None else {g: i for i, g in enumerate(self._set_genes)}
        )
        L = np.asarray(loadings, dtype=np.float64)
        norm = np.linalg.norm(L, axis=1, keepdims=True)
        self._unit = np.divide(L, norm, out=np.zeros_like(L), where=norm > 0)
        self._gene_row = {g: i for i, g in enumerate(genes)}
        self.w = float(coexpression_weight)
        self._corr = self._corr_col = None
        if coexpression is not None and len(coexpression[0]):
            self._corr = np.asarray(coexpression[1])
            self._corr_col = {t: j for j, t in enumerate(coexpression[0])}

    def _coexpression(self, rows: np.ndarray, fitted: list[str]) -> np.ndarray:
        """``max(corr, 0)`` of measured genes ``rows`` with measured ``fitted`` targets."""
        if self._corr is None:
            fg = np.array([self._gene_row[t] for t in fitted])
            return np.clip(self._unit[rows] @ self._unit[fg].T, 0.0, None)
        cols = np.array([self._corr_col.get(t, -1) for t in fitted])
        out = np.clip(self._corr[np.ix_(rows, np.maximum(cols, 0))], 0.0, None)
        out[:, cols < 0] = 0.0  # a measured target not fitted: no co-expression stored
        return out

    def __call__(self, queries: list[str], fitted: list[str]) -> np.ndarray:
        """Similarity matrix of shape (len(queries), len(fitted))."""
        S = np.zeros((len(queries), len(fitted)))
        if self._M is not None:
            qi = np.array([self._set_row.get(t.upper(), -1) for t in queries])
            fi = np.array([self._set_row.get(t.upper(), -1) for t in fitted])
            qh, fh = np.flatnonzero(qi >= 0), np.flatnonzero(fi >= 0)
            if len(qh) and len(fh):
                Q, F = self._M[qi[qh]], self._M[fi[fh]]
                inter = np.asarray((Q @ F.T).todense())
                sizes_q = np.asarray(Q.sum(axis=1)).ravel()
                sizes_f = np.asarray(F.sum(axis=1)).ravel()
                union = sizes_q[:, None] + sizes_f[None, :] - inter
                jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
                S[np.ix_(qh, fh)] = jac
        if self.w > 0:
            qg = np.array([self._gene_row.get(t, -1) for t in queries])
            fg = np.array([self._gene_row.get(t, -1) for t in fitted])
            qm, fm = np.flatnonzero(qg >= 0), np.flatnonzero(fg >= 0)
            if len(qm) and len(fm):
                corr = self._coexpression(qg[qm], [fitted[j] for j in fm])
                block = np.ix_(qm, fm)
                S[block] = (1 - self.w) * S[block] + self.w * corr
        return S


def neighbour_weights(sim: np.ndarray, n_neighbors: int = N_NEIGHBORS) -> np.ndarray:
    """Rows of ``sim`` kept at their ``n_neighbors`` largest positive entries, summing to 1.

    A row without a positive entry is all zeros (no neighbour). Ties are broken
    by column order (stable), so the result is deterministic.

    Examples
    --------
    >>> neighbour_weights(np.array([[0.1, 0.3, 0.0, 0.3]]), 2).tolist()
    [[0.0, 0.5, 0.0, 0.5]]
    """
    W = np.zeros_like(sim, dtype=np.float64)
    for i, row in enumerate(sim):
        order = np.argsort(-row, kind="stable")[:n_neighbors]
        order = order[row[order] > _MIN_SIMILARITY]
        if len(order):
            W[i, order] = row[order] / row[order].sum()
    return W


def least_squares_factor(y: np.ndarray, x: np.ndarray, empty: float) -> float:
    """``<y, x> / <x, x>`` clipped to [0, 1]; ``empty`` when ``x`` is zero.

    Examples
    --------
    >>> least_squares_factor(np.array([1.0, 1.0]), np.array([2.0, 2.0]), 1.0)
    0.5
    """
    return residual_scale([np.sum(y * x), np.sum(x * x)], empty)


def absolute_error_factor(y: np.ndarray, x: np.ndarray, empty: float) -> float:
    """The ``c`` in [0, 1] minimising ``sum |y - c x|``: a weighted median of ``y / x``.

    Examples
    --------
    >>> absolute_error_factor(np.array([1.0, 1.0, 3.0]), np.array([2.0, 2.0, 2.0]), 1.0)
    0.5
    """
    y, x = np.ravel(y), np.ravel(x)
    keep = np.abs(x) > 0
    if not keep.any():
        return float(empty)
    ratio, weight = y[keep] / x[keep], np.abs(x[keep])
    order = np.argsort(ratio, kind="stable")
    cum = np.cumsum(weight[order])
    k = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(np.clip(ratio[order][k], 0.0, 1.0))


@dataclass
class Start:
    """The fitted start of one cell type (see the module docstring).

    Attributes
    ----------
    fx : TargetEffects
        Joint additive effects.
    rows : dict of str to int
        Fitted label -> row of ``fx.loo``.
    loo : ndarray of shape (n_labels, n_genes)
        Each fitted label's leave-one-out start (its training baseline).
    alpha : float or ndarray of shape (n_genes,)
        Weight of the neighbours' departure (per gene by default).
    shrink : float
        The shrinkage ``c`` of the unseen part.
    observed : ndarray of shape (n_labels, n_genes) or None
        Each fitted label's own pseudobulk delta (what predicting it gives back).
    """

    fx: object
    rows: dict
    loo: np.ndarray
    alpha: float | np.ndarray
    shrink: float
    similarity: TargetSimilarity | None = None
    n_neighbors: int = N_NEIGHBORS
    observed: np.ndarray | None = None

    def _knn_departure(self, targets: list[str], exclude: set) -> np.ndarray:
        """Sum over ``targets`` of the weighted mean ``specific`` of their neighbours."""
        fitted = [t for t in self.fx.targets if t not in exclude]
        if not targets or not fitted or self.similarity is None:
            return np.zeros_like(self.fx.shared, dtype=np.float64)
        idx = [i for i, t in enumerate(self.fx.targets) if t not in exclude]
        W = neighbour_weights(self.similarity(targets, fitted), self.n_neighbors)
        return W.sum(axis=0) @ self.fx.specific[idx]

    def predict(self, targets: list[str]) -> np.ndarray:
        """The start of a label with these targets (a label not fitted)."""
        known = set(self.fx.targets)
        seen = [t for t in targets if t in known]
        unseen = [t for t in targets if t not in known]
        out = self.fx.predict(seen) if seen else np.zeros_like(self.fx.shared, np.float64)
        if unseen:
            part = len(unseen) * self.fx.shared + self.alpha * self._knn_departure(unseen, set())
            out = out + self.shrink * part
        return out


def fit_start(
    fx,
    rows: dict,
    deltas: np.ndarray,
    control_label: str,
    similarity: TargetSimilarity | None,
    *,
    n_neighbors: int = N_NEIGHBORS,
    labels: list[str] | None = None,
    knn: bool | str | float = "gene",
    shrink: bool | str = "l1",
) -> Start:
    """Fit ``alpha`` and ``c`` leave-one-label-out (closed form) and the training starts.

    Parameters
    ----------
    fx : TargetEffects
        Joint fit on the labels of ``rows`` (with ``loo`` and ``loo_shared``).
    rows : dict of str to int
        Fitted label -> its row in ``deltas`` and ``fx.loo``.
    deltas : ndarray of shape (n_labels, n_genes)
        The labels' pseudobulk deltas, in the rows of ``rows``.
    control_label : str
    similarity : TargetSimilarity or None
        None: no neighbours (``alpha`` = 0).
    n_neighbors : int
    labels : list of str, optional
        The label of every row of ``deltas`` and ``fx.loo``, needed when a label
        has several rows (a fit pooled over cell types); default: from ``rows``.
    knn : {"gene", True, False}, default="gene"
        ``alpha`` per gene (least squares per gene, shrunk towards the global
        factor as :func:`~sktx.regressor._crossfit.gene_residual_scale` does),
        one global ``alpha`` (True), 0 (False), or this fixed ``alpha`` (a float).
    shrink : {"l1", True, False}, default="l1"
        ``c`` minimising the absolute error (the MAE metric's loss; a weighted
        median), the squared error (True), or 1 (False).

    Returns
    -------
    Start
    """
    if labels is None:
        labels = sorted(rows, key=rows.get)
    targets = [split_targets(lab, control_label) or [lab] for lab in labels]
    count: dict[str, int] = {}
    for ts in targets:
        for t in set(ts):
            count[t] = count.get(t, 0) + 1
    start = Start(fx, dict(rows), np.asarray(fx.loo, np.float64), 0.0, 1.0, similarity, n_neighbors)
    start.observed = np.asarray(deltas)
    n = len(labels)
    if n == 0 or fx.loo_shared is None:
        return start
    seen_part = np.array(fx.loo, dtype=np.float64)  # loo minus the unseen targets' shared
    typical = np.zeros_like(seen_part)  # |unseen| * shared without the label
    depart = np.zeros_like(seen_part)  # neighbours' departure of its unseen targets
    has_unseen = np.zeros(n, dtype=bool)
    for i, ts in enumerate(targets):
        unseen = [t for t in ts if count[t] == 1]
        if not unseen:
            continue
        has_unseen[i] = True
        typical[i] = len(unseen) * fx.loo_shared[i]
        seen_part[i] -= typical[i]
        if knn and similarity is not None:
            depart[i] = start._knn_departure(unseen, set(ts))
    d = np.asarray(deltas, dtype=np.float64)
    u = has_unseen
    if u.any():
        r = (d - seen_part - typical)[u]
        if isinstance(knn, float):  # a fixed weight (start="knn"): nothing to fit
            start.alpha = knn
        else:
            start.alpha = least_squares_factor(r, depart[u], 0.0) if knn else 0.0
        if knn == "gene" and np.any(depart[u]):
            # per gene, shrunk towards the global factor (the residual scale's rule)
            sums = np.stack([(r * depart[u]).sum(0), (depart[u] ** 2).sum(0)])
            start.alpha = gene_residual_scale(sums).astype(np.float64)
        part = typical + start.alpha * depart
        factor = absolute_error_factor if shrink == "l1" else least_squares_factor
        start.shrink = factor((d - seen_part)[u], part[u], 1.0) if shrink else 1.0
        start.loo = seen_part + start.shrink * part
    return start
