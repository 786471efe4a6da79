"""The one meaning of ``score`` for every sktx estimator (regressor and baselines).

``estimator.score(X)`` is minus the mean squared error of pseudobulk deltas on the
perturbed cells of ``X``: each perturbation (per cell type) is predicted from all
control cells of that cell type in ``X``, and its predicted delta (mean predicted
minus mean control) is compared with the observed one (mean perturbed minus mean
control). Higher is better, as scikit-learn expects, so ``GridSearchCV`` with
default scoring compares the same quantity across model types. For the Virtual
Cell Challenge metrics pass ``scoring=sktx.metrics.get_scorer("vcc")``.
"""

from __future__ import annotations

import numpy as np

from sktx.data import DataContractError, PerturbationData

__all__ = ["SCORE_DOC", "delta_mse_score"]

#: Docstring body shared by every estimator's ``score``.
SCORE_DOC = """Negative mean squared error of pseudobulk deltas on the perturbed cells of ``X``.

        Each perturbation (per cell type) is predicted from all control cells of
        that cell type in ``X``; its delta (mean predicted - mean control) is
        compared with the observed delta (mean perturbed - mean control), over
        the estimator's genes. Higher is better. Every sktx estimator scores
        this way (see :mod:`sktx._scoring`).

        Parameters
        ----------
        X : AnnData or PerturbationData
            Control and perturbed cells.
        y : None
            Ignored.

        Returns
        -------
        float
        """


def delta_mse_score(estimator, data: PerturbationData) -> float:
    """Minus the mean over (perturbation, cell type) of the squared delta error.

    Parameters
    ----------
    estimator : fitted sktx estimator
        Has ``predict`` (returning an AnnData over ``genes_`` or
        ``feature_names_in_``).
    data : PerturbationData
        Prepared with the estimator's keys.

    Returns
    -------
    float
    """
    groups = data.groups
    missing = sorted(set(groups.cell_types) - set(groups.control_rows))
    if missing or not groups.labels:
        raise DataContractError(
            "`score` needs perturbed cells and control cells of the same cell type in `X`; "
            f"cell types without controls: {missing}."
        )
    src = [groups.control_rows[ct] for ct in groups.cell_types]
    labels = np.concatenate([[lab] * len(r) for lab, r in zip(groups.labels, src, strict=True)])
    query = data[np.concatenate(src)].relabel(labels)
    pred = estimator.predict(query)
    genes = list(pred.var_names)
    real = data.select_genes(genes).X
    P = np.asarray(pred.X)
    errs, start = [], 0
    for j, rows in enumerate(groups.rows):
        ctrl_rows = src[j]
        ctrl = np.asarray(real[ctrl_rows].mean(0), dtype=np.float64).ravel()
        stop = start + len(ctrl_rows)
        pred_delta = P[start:stop].mean(0, dtype=np.float64) - ctrl
        obs_delta = np.asarray(real[rows].mean(0), dtype=np.float64).ravel() - ctrl
        errs.append(np.mean((pred_delta - obs_delta) ** 2))
        start = stop
    return -float(np.mean(errs))
