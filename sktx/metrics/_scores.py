"""One number per metric: the ``*_score`` functions, the cell-mean baseline, the VCC score.

The ``*_score`` functions are one implementation (:func:`_score_function`) with
docstrings built from the registry entry of each metric.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import numpy as np
import pandas as pd

from sktx.metrics._input import group_means, read_cells
from sktx.metrics._registry import Metric, available_metrics, get_metric
from sktx.metrics._table import Reference, _dense, perturbation_metrics, select_metrics

__all__ = [
    "build_mean_baseline",
    "des_score",
    "mae_score",
    "pds_score",
    "pearson_delta_score",
    "top_de_mse_score",
    "vcc_from_tables",
    "vcc_metrics",
    "vcc_score",
]

_SCORE_DOC = """{summary}

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
    >>> from sktx import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> {example}
    {result}
    """


def _mean_of(real, pred, metric: str, **kwargs) -> float:
    table = perturbation_metrics(real, pred, metrics=[metric], **kwargs)
    values = table[metric].to_numpy(dtype=float)
    nan_value = get_metric(metric).nan_value
    if nan_value is not None:
        values = np.nan_to_num(values, nan=nan_value)
    return float(values.mean())


def _score_function(name: str, example: str, result: str) -> Callable[..., float]:
    """The ``<name>_score(real, pred, ...)`` function of a registered metric."""

    def score(
        real,
        pred,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        **kwargs,
    ) -> float:
        return _mean_of(
            real,
            pred,
            name,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
            **kwargs,
        )

    score.__name__ = score.__qualname__ = f"{name}_score"
    summary = textwrap.indent(get_metric(name).doc, "    ").lstrip()
    score.__doc__ = _SCORE_DOC.format(summary=summary, example=example, result=result)
    return score


des_score = _score_function("des", "des_score(real, real)", "1.0")
pds_score = _score_function("pds", "pds_score(real, real)", "1.0")
mae_score = _score_function("mae", "mae_score(real, real)", "0.0")
pearson_delta_score = _score_function(
    "pearson_delta", "round(pearson_delta_score(real, real), 6)", "1.0"
)
top_de_mse_score = _score_function("top_de_mse", "top_de_mse_score(real, real)", "0.0")


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
    real : AnnData or PerturbationData
        Log1p expression with control cells (a PerturbationData gives its
        canonical labels to the baseline's ``obs[perturbation_key]``).
    perturbation_key, control_label, cell_type_key
        As in :func:`perturbation_metrics`.

    Returns
    -------
    AnnData
        Same cells, obs and var as ``real``; dense ``X``.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=50, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> build_mean_baseline(real).shape == real.shape
    True
    """
    import anndata as ad

    cells = read_cells(
        real,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        validate=False,
    )
    X, labels = cells.X, cells.labels
    types = np.zeros(real.n_obs, dtype=object) if cells.types is None else cells.types
    out = np.empty(real.shape, dtype=np.float64)
    for ct in set(types.tolist()):
        rows = np.flatnonzero(types == ct)
        uniq, codes = np.unique(labels[rows], return_inverse=True)
        profile = group_means(X[rows], codes, len(uniq)).mean(axis=0)
        is_ctrl = labels[rows] == control_label
        out[rows[~is_ctrl]] = profile
        out[rows[is_ctrl]] = _dense(X, rows[is_ctrl])
    obs = real.obs.copy()
    if hasattr(real, "labels"):
        # a PerturbationData: its canonical labels, as every reader of the baseline expects
        # (the obs column keeps the spelling of the file, e.g. "SET+KLF1" for "KLF1+SET")
        obs[perturbation_key] = pd.Categorical(labels)
    return ad.AnnData(out, obs=obs, var=real.var.copy())


def vcc_metrics() -> list[Metric]:
    """The registered metrics averaged into the VCC score (``in_vcc``), in registry order."""
    return [m for m in map(get_metric, available_metrics()) if m.in_vcc]


def vcc_from_tables(user: pd.DataFrame, baseline: pd.DataFrame, *, return_components=False):
    """The VCC score from the per-perturbation tables of a prediction and of the baseline.

    Both tables (from :func:`perturbation_metrics`) must hold the :func:`vcc_metrics`
    columns; see :func:`vcc_score` for the scaling.
    """
    metrics = vcc_metrics()
    names = [m.name for m in metrics]
    u, b = user[names].mean(), baseline[names].mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = {
            m.name: (u[m.name] - b[m.name]) / (1.0 - b[m.name])
            if m.greater_is_better
            else 1.0 - u[m.name] / b[m.name]
            for m in metrics
        }
    scaled = {k: max(0.0, float(np.nan_to_num(v, nan=0.0, neginf=0.0))) for k, v in scaled.items()}
    score = float(np.mean(list(scaled.values())))
    if not return_components:
        return score
    parts = {
        "user": {k: float(v) for k, v in u.items()},
        "baseline": {k: float(v) for k, v in b.items()},
        "scaled": scaled,
    }
    return score, parts


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
    >>> from sktx import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=400, n_genes=60, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> vcc_score(real, real)
    1.0
    """
    keys = dict(
        perturbation_key=perturbation_key, control_label=control_label, cell_type_key=cell_type_key
    )
    # Real and predicted cells are checked once; the baseline built here needs no check.
    ref = Reference(real, **keys)
    user_cells = ref.read(pred)
    if baseline is None:
        baseline = build_mean_baseline(real, **keys)
        # the real cells' canonical labels, as the prediction's are read ("B+A" -> "A+B")
        baseline.obs[perturbation_key] = pd.Categorical(ref.cells.labels)
        base_cells = ref.read(baseline, validate=False)
    else:
        base_cells = ref.read(baseline)
    metrics = select_metrics([m.name for m in vcc_metrics()])
    user = ref.table(user_cells, metrics, fdr_threshold, 20)
    base = ref.table(base_cells, metrics, fdr_threshold, 20)
    return vcc_from_tables(user, base, return_components=return_components)
