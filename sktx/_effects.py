"""Per-target additive effects fitted jointly on single and combined perturbations.

The classic additive baseline takes a target's effect from its single
perturbation only, so a target seen only inside combinations (``A+B`` with no
``A`` alone, common in combinatorial screens) falls back to the mean delta,
and the combinations themselves are never used to learn anything. Here every
fitted label is one equation::

    delta(label) = k * shared + sum_{t in label} specific[t]

(``k`` = number of targets): ``shared`` is the effect of a typical target
(unpenalised; it is what an unseen target gets) and ``specific[t]`` is a
ridge-penalised departure from it, so a target with little evidence stays near
the typical effect. With single perturbations only and a small penalty this is
the additive baseline again: a seen label gets (close to) its own delta, an
unseen single the mean delta, ``A+B`` the sum of the singles. The penalty is
chosen by exact leave-one-label-out cross-validation (the ridge hat-matrix
identity), so nothing is tuned by hand or on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sktx.data import split_targets

#: Penalties tried, in units of one label's weight in the least-squares fit.
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class TargetEffects:
    """Fitted effects: ``predict(["A", "B"])`` = 2 * shared + specific[A] + specific[B].

    Attributes
    ----------
    targets : list of str
        Targets with a fitted specific effect.
    shared : ndarray of shape (n_genes,)
        Effect of a typical target (also the effect of an unseen one).
    specific : ndarray of shape (n_targets, n_genes)
        Departure of each target from ``shared``.
    lam : float
        Ridge penalty chosen by leave-one-label-out cross-validation.
    loo : ndarray of shape (n_labels, n_genes)
        Each fitted label predicted by the fit without that label.
    loo_shared : ndarray of shape (n_labels, n_genes) or None
        The typical effect ``shared`` of the fit without each label (what a
        target seen only in that label gets in its leave-one-out prediction).
    """

    targets: list[str]
    shared: np.ndarray
    specific: np.ndarray
    lam: float
    loo: np.ndarray
    loo_shared: np.ndarray | None = None

    def predict(self, targets: list[str]) -> np.ndarray:
        """Delta of a label with these targets (unknown targets get ``shared``)."""
        index = {t: i for i, t in enumerate(self.targets)}
        out = len(targets) * self.shared.astype(np.float64)
        for t in targets:
            if t in index:
                out = out + self.specific[index[t]]
        return out


def _design(target_lists: list[list[str]], targets: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(targets)}
    A = np.zeros((len(target_lists), 1 + len(targets)))
    for i, ts in enumerate(target_lists):
        A[i, 0] = len(ts)
        for t in ts:
            A[i, 1 + index[t]] += 1.0
    return A


def _ridge(A: np.ndarray, lam: float) -> np.ndarray:
    """``(A'A + P)^-1 A'`` with the shared column unpenalised."""
    pen = np.full(A.shape[1], lam)
    pen[0] = 0.0
    gram = A.T @ A + np.diag(pen)
    # tiny jitter: the shared column alone is singular when every label is empty
    gram[np.diag_indices_from(gram)] += 1e-9
    return np.linalg.solve(gram, A.T)


def fit_target_effects(
    deltas: np.ndarray, target_lists: list[list[str]], lambdas=LAMBDAS
) -> TargetEffects:
    """Fit shared and per-target effects on labelled pseudobulk deltas.

    Parameters
    ----------
    deltas : ndarray of shape (n_labels, n_genes)
        Pseudobulk delta of each label to its controls.
    target_lists : list of list of str
        Targets of each label (``["A", "B"]`` for ``A+B``).
    lambdas : sequence of float
        Penalties tried; the one with the smallest leave-one-label-out squared
        error is kept.

    Returns
    -------
    TargetEffects

    Examples
    --------
    >>> import numpy as np
    >>> d = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> fx = fit_target_effects(d, [["A"], ["B"], ["A", "B"]])
    >>> np.round(fx.predict(["A"]), 1).tolist()
    [1.0, 0.0]
    """
    deltas = np.asarray(deltas)
    n, n_genes = deltas.shape
    targets = sorted({t for ts in target_lists for t in ts})
    if n == 0:
        zero = np.zeros(n_genes)
        empty = np.zeros((0, n_genes))
        return TargetEffects(targets, zero, np.zeros((len(targets), n_genes)), 0.0, empty, empty)
    A = _design(target_lists, targets)
    best = None
    for lam in lambdas:
        solve = _ridge(A, lam)
        hat = A @ solve  # labels x labels: the fit is a linear smoother
        # gene chunks keep the peak memory at a few copies of one chunk, not of all genes
        err = sum(
            float(((_loo(hat, deltas[:, c]) - deltas[:, c]) ** 2).sum()) for c in _chunks(n_genes)
        )
        if best is None or err < best[0] - 1e-12:
            best = (err, lam, solve, hat)
    _, lam, solve, hat = best
    coef = np.empty((A.shape[1], n_genes))
    loo = np.empty((n, n_genes))
    loo_shared = np.zeros((n, n_genes))
    # the fit without label i (rank-one downdate): coef - solve[:, i] e_i / (1 - h_ii)
    h = np.diag(hat)
    ok = 1.0 - h > 1e-6
    for c in _chunks(n_genes):
        coef[:, c] = solve @ deltas[:, c]
        fitted = hat @ deltas[:, c]  # once for both leave-one-out quantities
        loo[:, c] = _loo(hat, deltas[:, c], fitted)
        resid = deltas[:, c] - fitted
        loo_shared[ok, c] = coef[0, c] - (solve[0, ok] / (1.0 - h[ok]))[:, None] * resid[ok]
    return TargetEffects(targets, coef[0], coef[1:], float(lam), loo, loo_shared)


def _chunks(n_genes: int, size: int = 2048):
    return [slice(s, min(s + size, n_genes)) for s in range(0, n_genes, size)]


def _loo(hat: np.ndarray, y: np.ndarray, fitted: np.ndarray | None = None) -> np.ndarray:
    """Exact leave-one-out predictions of the linear smoother ``hat`` for columns ``y``.

    A label that alone determines its own fit (leverage 1) has no out-of-sample
    prediction: it gets 0, the "no change" answer. ``fitted`` is ``hat @ y`` when
    the caller has it already.
    """
    y = np.asarray(y, dtype=np.float64)
    if fitted is None:
        fitted = hat @ y
    h = np.diag(hat)
    free = 1.0 - h
    ok = free > 1e-6
    out = np.zeros_like(y)
    out[ok] = (fitted[ok] - h[ok, None] * y[ok]) / free[ok, None]
    return out


def fit_by_cell_type(
    deltas: np.ndarray,
    labels: list[str],
    cell_types: list[str],
    control_label: str,
    *,
    pooled: bool = False,
) -> dict:
    """:func:`fit_target_effects` per cell type, on the labels of that cell type.

    Returns ``{cell type: (TargetEffects, {label: row of its loo})}``; with
    ``pooled=True`` also key ``None``: one fit on all cell types together (for
    cell types not seen in fit; the same fit when there is only one).
    """
    targets = [split_targets(lab, control_label) or [lab] for lab in labels]
    cts = np.asarray(cell_types, dtype=object)
    names = sorted(set(cts.tolist()))
    out = {}
    for ct in [*names, None] if pooled else names:
        if ct is None and len(names) == 1:
            out[None] = out[names[0]]  # one cell type: pooling changes nothing
            continue
        rows = np.arange(len(labels)) if ct is None else np.flatnonzero(cts == ct)
        fx = fit_target_effects(deltas[rows], [targets[i] for i in rows])
        out[ct] = (fx, {labels[i]: k for k, i in enumerate(rows)})
    return out
