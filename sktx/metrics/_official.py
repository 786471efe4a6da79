"""Official numbers: delegate to the ``cell-eval`` package (``pip install sktx[eval]``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sktx.metrics._input import check

__all__ = ["VCCResult", "vcc_evaluate"]


@dataclass(frozen=True)
class VCCResult:
    """What :func:`vcc_evaluate` returns.

    Attributes
    ----------
    results : DataFrame
        cell-eval's per-perturbation metrics (``[cell_type,] perturbation``, one
        column per metric).
    agg : DataFrame
        Mean of each metric over all rows.
    scores : DataFrame or None
        cell-eval ``score_agg_metrics`` against the cell-mean baseline: one row
        per metric plus ``avg_score`` (None when ``score=False``).
    score : float
        The ``avg_score`` row (NaN when ``score=False``).
    """

    results: pd.DataFrame
    agg: pd.Series
    scores: pd.DataFrame | None
    score: float


def _cell_eval_rows(pred, real, pert_col, control_pert, profile, num_threads) -> pd.DataFrame:
    from cell_eval import MetricsEvaluator

    with tempfile.TemporaryDirectory() as outdir:
        evaluator = MetricsEvaluator(
            adata_pred=pred,
            adata_real=real,
            pert_col=pert_col,
            control_pert=control_pert,
            num_threads=num_threads,
            outdir=outdir,
        )
        results, _ = evaluator.compute(profile=profile, write_csv=False)
    return results.to_pandas()


def _plain(data, perturbation_key: str, cell_type_key: str | None):
    """A new AnnData of prepared cells for cell-eval (which edits its inputs in place).

    log1p ``X`` and the canonical labels (and cell types) as the only ``obs`` columns,
    so an AnnData, a counts matrix or a :class:`~sktx.PerturbationData` are scored alike.
    """
    out = data.to_adata()
    cols = {perturbation_key: np.asarray(data.labels, dtype=str)}
    if cell_type_key is not None:
        cols[cell_type_key] = np.asarray(data.cell_types, dtype=str)
    out.obs = pd.DataFrame(cols, index=out.obs_names)
    return out


def vcc_evaluate(
    pred,
    real,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    profile: str = "vcc",
    score: bool = True,
    num_threads: int = 1,
) -> VCCResult:
    """Evaluate a prediction with cell-eval, the Virtual Cell Challenge's own code.

    Runs ``cell_eval.MetricsEvaluator(pred, real, pert_col=perturbation_key,
    control_pert=control_label).compute(profile=profile)`` (per cell type when
    ``cell_type_key`` is given, as ``cell-eval run --celltype-col``) and, with
    ``score=True``, the same on cell-eval's ``build_base_mean_adata(real)`` to
    scale the result with ``score_agg_metrics``. Slower than
    :func:`perturbation_metrics` (cell-eval runs its own DE with pdex); use
    this for reported numbers, the fast functions for model selection.

    Parameters
    ----------
    pred, real : AnnData or PerturbationData
        Predicted and real expression (log1p or counts, normalised as
        :func:`sktx.prepare` does), same genes; both hold control cells and the
        same perturbations. Not modified (new objects are passed, since
        cell-eval normalises in place).
    perturbation_key : str, default="target_gene"
        Passed as cell-eval's ``pert_col`` (whose own default is ``"target"``).
    control_label : str, default="non-targeting"
        Passed as ``control_pert``.
    cell_type_key : str, optional
        Evaluate each cell type separately and pool the rows.
    profile : {"vcc", "minimal", "full", ...}, default="vcc"
        cell-eval metric profile ("vcc": ``mae``, ``discrimination_score_l1``,
        ``overlap_at_N``).
    score : bool, default=True
        Also score against the cell-mean baseline.
    num_threads : int, default=1
        Threads for cell-eval's DE.

    Returns
    -------
    VCCResult

    Raises
    ------
    ImportError
        When cell-eval is not installed (``pip install sktx[eval]``).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=40, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> result = vcc_evaluate(real, real)  # doctest: +SKIP
    >>> result.agg["overlap_at_N"]  # doctest: +SKIP
    1.0
    """
    try:
        import cell_eval
        import polars as pl
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "vcc_evaluate needs the optional `cell-eval` package: `pip install sktx[eval]` "
            "(or `pip install cell-eval`). The fast `sktx.metrics` functions do not need it."
        ) from err

    pred, real = (
        _plain(
            check(
                obj,
                perturbation_key=perturbation_key,
                control_label=control_label,
                cell_type_key=cell_type_key,
            ),
            perturbation_key,
            cell_type_key,
        )
        for obj in (pred, real)
    )
    if cell_type_key is None:
        parts = {None: (pred, real)}
    else:
        parts = {
            ct: (
                pred[pred.obs[cell_type_key] == ct].copy(),
                real[real.obs[cell_type_key] == ct].copy(),
            )
            for ct in sorted(set(real.obs[cell_type_key]))
        }

    def run(which: str) -> pd.DataFrame:
        frames = []
        for ct, (p, r) in parts.items():
            if which == "base":
                p = cell_eval.build_base_mean_adata(
                    r.copy(), pert_col=perturbation_key, control_pert=control_label
                )
            rows = _cell_eval_rows(
                p, r.copy(), perturbation_key, control_label, profile, num_threads
            )
            if ct is not None:
                rows.insert(0, "cell_type", ct)
            frames.append(rows)
        return pd.concat(frames, ignore_index=True)

    results = run("user")
    metric_cols = [c for c in results.columns if c not in ("cell_type", "perturbation")]
    agg = results[metric_cols].mean()
    if not score:
        return VCCResult(results, agg, None, float("nan"))
    base = run("base")

    def describe(frame: pd.DataFrame) -> pl.DataFrame:
        return pl.from_pandas(frame[metric_cols].astype(float)).describe()

    scores = cell_eval.score_agg_metrics(describe(results), describe(base)).to_pandas()
    avg = float(scores.loc[scores["metric"] == "avg_score", "from_baseline"].iloc[0])
    return VCCResult(results, agg, scores, avg)
