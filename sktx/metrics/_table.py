"""The per-perturbation table: every registered metric, one row per (cell type, perturbation).

The real and the predicted cells are two AnnData objects with the same genes;
both hold control cells (``control_label``) and the same set of perturbations.
With ``cell_type_key`` each cell type is scored on its own (as ``cell-eval run
--celltype-col``) and results are averaged over all (cell type, perturbation) rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.metrics import _builtin  # noqa: F401  (registers the built-in metrics)
from sktx.metrics._de import DEResult, de_vs_control
from sktx.metrics._input import Cells, DataContractError, group_means, read_cells
from sktx.metrics._registry import Metric, MetricContext, available_metrics, get_metric

__all__ = ["METRICS", "Reference", "perturbation_metrics", "select_metrics"]

#: The built-in per-perturbation metrics of :func:`perturbation_metrics`, in
#: display order; :func:`available_metrics` adds the registered ones.
METRICS = available_metrics()

# Column order of the built-in metrics in the table, as in earlier releases (files
# written from it are compared across versions); registered metrics follow.
_TABLE_ORDER = ("mae", "pearson_delta", "pds", "des", "top_de_mse")


def _dense(X, rows: np.ndarray) -> np.ndarray:
    sub = X[rows]
    return sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)


def select_metrics(names: Sequence[str] | None) -> list[Metric]:
    """Registered metrics named in ``names`` (all when None), in table column order."""
    available = available_metrics()
    names = list(available if names is None else names)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(available)}.")
    rank = {name: i for i, name in enumerate(_TABLE_ORDER)}
    wanted = set(names)
    chosen = [get_metric(name) for name in available if name in wanted]
    return sorted(chosen, key=lambda m: rank.get(m.name, len(rank)))


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


def _columns(metric: Metric, value, n_rows: int) -> dict:
    """The table columns one metric function returned, checked."""
    columns = dict(value) if isinstance(value, Mapping) else {metric.name: value}
    if next(iter(columns), None) != metric.name:
        raise TypeError(
            f"metric {metric.name!r}: a mapping returned by `func` must hold the column "
            f"{metric.name!r} first; got {list(columns)}."
        )
    for column, values in columns.items():
        if np.shape(values) != (n_rows,):
            raise ValueError(
                f"metric {metric.name!r}: column {column!r} has shape {np.shape(values)}; "
                f"`func` must return one value per perturbation ({n_rows},)."
            )
    return columns


def _evaluate(
    ctx: _Context,
    X,
    labels: np.ndarray,
    metrics: Sequence[Metric],
    fdr_threshold: float,
    n_top: int,
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
    needs_de = any(m.needs_de for m in metrics)
    inputs = MetricContext(
        perturbations=ctx.perts,
        genes=ctx.genes,
        real_means=ctx.means[1:],
        pred_means=means[1:],
        real_control=ctx.means[0],
        pred_control=means[0],
        fdr_threshold=fdr_threshold,
        n_top_de=n_top,
        real_de=ctx.de if needs_de else None,
        pred_de=(lambda: _all_de(X, rows, means)) if needs_de else None,
    )
    out = pd.DataFrame({"perturbation": ctx.perts.astype(str)})
    for metric in metrics:
        for column, values in _columns(metric, metric.func(inputs), len(ctx.perts)).items():
            out[column] = values
    return out


class Reference:
    """The real cells, checked and read once, against which predictions are scored.

    Parameters
    ----------
    real : AnnData
        Real log1p cells with controls.
    perturbation_key, control_label, cell_type_key
        As in :func:`perturbation_metrics`.
    """

    def __init__(
        self, real, *, perturbation_key: str, control_label: str, cell_type_key: str | None
    ) -> None:
        self.real = real
        self.keys = {
            "perturbation_key": perturbation_key,
            "control_label": control_label,
            "cell_type_key": cell_type_key,
        }
        self.cells = read_cells(real, **self.keys)
        self._contexts: dict | None = None

    def read(self, pred, *, validate: bool = True) -> Cells:
        """Check ``pred`` (unless built from the real cells) and read it."""
        cells = read_cells(pred, validate=validate, **self.keys)
        real = self.real
        if validate and not np.array_equal(np.asarray(real.var_names), np.asarray(pred.var_names)):
            if set(real.var_names) == set(pred.var_names):
                fix = "reorder with `pred = pred[:, real.var_names]`"
            else:
                missing = sorted(set(real.var_names) - set(pred.var_names))[:5]
                fix = f"e.g. {missing} are missing; subset with `real = real[:, pred.var_names]`"
            raise DataContractError(
                f"real ({real.n_vars} genes) and predicted ({pred.n_vars} genes) data must "
                f"have the same `var_names` in the same order; {fix}."
            )
        return cells

    def contexts(self) -> dict:
        """Per-cell-type real contexts {cell_type or None: _Context}, built on first use."""
        if self._contexts is None:
            cells, control = self.cells, self.keys["control_label"]
            if cells.types is None:
                self._contexts = {None: _Context(cells.X, cells.labels, cells.genes, control)}
            else:
                self._contexts = {}
                for ct in sorted(set(cells.types.tolist())):
                    rows = np.flatnonzero(cells.types == ct)
                    self._contexts[ct] = _Context(
                        cells.X[rows], cells.labels[rows], cells.genes, control
                    )
        return self._contexts

    def table(
        self,
        pred: Cells,
        metrics: Sequence[Metric],
        fdr_threshold: float = 0.05,
        n_top_de: int = 20,
    ) -> pd.DataFrame:
        """The per-perturbation table of ``pred`` (from :meth:`read`) for ``metrics``."""
        contexts = self.contexts()
        cell_type_key = self.keys["cell_type_key"]
        types = pred.types
        if types is not None and set(types.tolist()) != set(contexts):
            raise DataContractError(
                f"`obs[{cell_type_key!r}]` of the prediction has cell types "
                f"{sorted(set(types.tolist()))} but the real data has {sorted(contexts)}; "
                "predict every cell type of the real data."
            )
        frames = []
        for ct, ctx in contexts.items():
            rows = slice(None) if types is None else np.flatnonzero(types == ct)
            table = _evaluate(
                ctx, pred.X[rows], pred.labels[rows], metrics, fdr_threshold, n_top_de
            )
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
        Subset of :func:`available_metrics`: the built-in :data:`METRICS`
        (``"des"``, ``"pds"``, ``"mae"``, ``"pearson_delta"``, ``"top_de_mse"``)
        and any added with :func:`register_metric`; default all. The DE-based
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
    >>> from sktx import log_normalize
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=50, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> table = perturbation_metrics(real, real, metrics=["mae", "pds"])
    >>> float(table["mae"].max()), float(table["pds"].min())
    (0.0, 1.0)
    """
    chosen = select_metrics(metrics)
    ref = Reference(
        real,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
    )
    return ref.table(ref.read(pred), chosen, fdr_threshold, n_top_de)
