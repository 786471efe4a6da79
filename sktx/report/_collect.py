"""Score fitted models on held-out perturbations and gather what a report shows."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["evaluate_predictions", "history_frame", "phase_history_frame"]


def _labels() -> dict[str, str]:
    """Report column of each registered metric of :mod:`sktx.metrics`, in display order."""
    from sktx.metrics import available_metrics, get_metric

    return {name: get_metric(name).label for name in available_metrics()}


def _slim(adata, genes, keys):
    """Just the genes and label columns the metrics read (keeps concatenation cheap)."""
    import anndata as ad

    from sktx.data import PerturbationData, get_matrix

    if isinstance(adata, PerturbationData):  # prepared once by the caller: canonical labels
        X = adata.select_genes(list(genes)).X
        columns = dict(zip(keys, (adata.labels, adata.cell_types), strict=True))
        obs = pd.DataFrame({k: np.asarray(v).astype(str) for k, v in columns.items() if k})
        obs.index = adata.obs.index.astype(str)
    else:
        X = get_matrix(adata[:, list(genes)])
        obs = pd.DataFrame({k: adata.obs[k].astype(str).to_numpy() for k in keys if k})
        obs.index = adata.obs_names.astype(str)
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return ad.AnnData(X.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(genes)))


def _delta_frame(adata, key, control_label, cell_type_key) -> pd.DataFrame:
    from sktx.data import pseudobulk

    deltas, groups = pseudobulk(adata, key, cell_type_key=cell_type_key).deltas(control_label)
    if cell_type_key is None or groups["cell_type"].nunique() <= 1:
        index = groups["perturbation"].astype(str)
    else:
        index = groups["perturbation"].astype(str) + " | " + groups["cell_type"].astype(str)
    return pd.DataFrame(deltas, index=pd.Index(index, name="perturbation"), columns=adata.var_names)


def evaluate_predictions(
    real,
    predictions: Mapping[str, object],
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    vcc: bool = True,
) -> dict:
    """Score several models' predictions of held-out perturbations against the real cells.

    Parameters
    ----------
    real : AnnData or PerturbationData
        Real cells of the held-out perturbations plus control cells (an AnnData
        is read as log1p, as written; a PerturbationData as prepared).
    predictions : mapping of str to AnnData
        Model name -> predicted cells (e.g. ``model.predict(make_query(real))``).
        Control cells are added from ``real`` when a prediction has none. All
        are scored on the genes every prediction and ``real`` share.
    perturbation_key, control_label, cell_type_key : str
        As in :mod:`sktx.metrics`.
    vcc : bool, default=True
        Add the overall VCC score (:func:`sktx.metrics.vcc_score`, scaled against
        the cell-mean baseline of ``real``).

    Returns
    -------
    dict
        ``metrics`` (models x metrics, means over perturbations),
        ``per_perturbation`` (long table, with ``n_de_real``: genes DE in the real
        cells), ``reference`` (the per-perturbation table of the cell-mean
        baseline the VCC score is scaled against; None with ``vcc=False``),
        ``real_delta`` and ``pred_delta`` (perturbations x genes pseudobulk
        change vs control) and ``genes``;
        these are the fields of :class:`~sktx.report.RunRecord`.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx import log_normalize
    >>> from sktx.metrics import build_mean_baseline
    >>> real = log_normalize(make_perturbseq(n_cells=300, n_genes=40, n_perturbations=3,
    ...                                      n_combinations=0, random_state=0))
    >>> out = evaluate_predictions(real, {"perfect": real, "mean": build_mean_baseline(real)})
    >>> float(out["metrics"].loc["perfect", "MAE"])
    0.0
    """
    import anndata as ad

    from sktx.metrics import build_mean_baseline
    from sktx.metrics._scores import vcc_from_tables, vcc_metrics
    from sktx.metrics._table import Reference, select_metrics

    keys = [perturbation_key, cell_type_key]
    genes = pd.Index(real.genes if hasattr(real, "genes") else real.var_names)
    for pred in predictions.values():
        genes = genes[genes.isin(pred.var_names)]
    if genes.empty:
        raise ValueError("the predictions and the real data share no genes; nothing to score.")
    real_g = _slim(real, genes, keys)
    controls = real_g[(real_g.obs[perturbation_key] == control_label).to_numpy()]
    kw = {
        "perturbation_key": perturbation_key,
        "control_label": control_label,
        "cell_type_key": cell_type_key,
    }
    base = build_mean_baseline(real_g, **kw) if vcc else None
    # One check and one real DE for all models; the VCC score reuses each model's table
    # and one baseline table (same numbers as vcc_score).
    names = _labels()
    rows, tables, pred_delta, ref, base_table = {}, [], {}, None, None
    for name, pred in predictions.items():
        pred_g = _slim(pred, genes, keys)
        if not (pred_g.obs[perturbation_key] == control_label).any():
            pred_g = ad.concat([controls, pred_g], index_unique=None)
            pred_g.obs_names_make_unique()
        if ref is None:
            # prepared real data are read as they are (not checked a second time)
            prepared = real.select_genes(list(genes)) if hasattr(real, "genes") else real_g
            ref = Reference(prepared, **kw)
        table = ref.table(ref.read(pred_g), select_metrics(None))
        cols = [c for c in names if c in table]
        means = table[cols].astype(float).mean()
        row = {names[c]: float(means[c]) for c in cols}
        if vcc:
            if base_table is None:
                in_vcc = select_metrics([m.name for m in vcc_metrics()])
                base_table = ref.table(ref.read(base), in_vcc)
            row["VCC"] = float(vcc_from_tables(table, base_table))
        table.insert(0, "model", name)
        tables.append(table)
        rows[name] = row
        pred_delta[name] = _delta_frame(pred_g, perturbation_key, control_label, cell_type_key)
    per_pert = pd.concat(tables, ignore_index=True).rename(columns=names)
    metrics = pd.DataFrame.from_dict(rows, orient="index")
    metrics.index.name = "model"
    reference = None if base_table is None else base_table.rename(columns=names)
    return {
        "metrics": metrics,
        "per_perturbation": per_pert,
        "reference": reference,
        "real_delta": _delta_frame(real_g, perturbation_key, control_label, cell_type_key),
        "pred_delta": pred_delta,
        "genes": list(genes),
    }


def history_frame(net_or_history, *, phase: int = 1, n_genes: int | None = None) -> pd.DataFrame:
    """Per-epoch rows of a skorch history as a DataFrame for the report.

    Parameters
    ----------
    net_or_history : skorch net or History or list of dict
        Anything with a skorch-style history.
    phase : int, default=1
        Phase number written in the ``phase`` column.
    n_genes : int, optional
        Gene count written in the ``n_genes`` column.

    Returns
    -------
    DataFrame
        Columns ``phase``, ``n_genes``, ``epoch`` and the scalar per-epoch
        entries (``train_loss``, ``valid_loss``, ``dur``, ``cells_per_s``,
        ``peak_rss_mb``, ...); batch-level entries are dropped.

    Examples
    --------
    >>> history_frame([{"epoch": 1, "train_loss": 0.5, "batches": []}])[["phase", "train_loss"]]
       phase  train_loss
    0      1         0.5
    """
    history = getattr(net_or_history, "history_", None) or getattr(
        net_or_history, "history", net_or_history
    )
    rows = []
    for i, row in enumerate(history):
        flat = {
            k: v
            for k, v in dict(row).items()
            if k != "batches" and (v is None or np.isscalar(v)) and not k.endswith("_best")
        }
        flat.setdefault("epoch", i + 1)
        rows.append(flat)
    frame = pd.DataFrame(rows)
    frame.insert(0, "n_genes", n_genes)
    frame.insert(0, "phase", phase)
    return frame


# Per-epoch lists a phase record may hold, and the report column each becomes.
_CURVES = {
    "loss_curve": "train_loss",
    "train_loss": "train_loss",
    "train_loss_curve": "train_loss",
    "valid_loss": "valid_loss",
    "valid_loss_curve": "valid_loss",
    "validation_curve": "valid_loss",
    "cells_per_s": "cells_per_s",
    "peak_rss_gb": "peak_rss_gb",
    "dur": "dur",
}


def phase_history_frame(phase_history) -> pd.DataFrame:
    """Per-epoch rows of all phases of a progressive fit, for the report.

    Parameters
    ----------
    phase_history : list of dict
        One record per phase, as :attr:`ProgressiveFit.phase_history_`: a skorch
        history under ``history`` (list of per-epoch dicts), or per-epoch lists
        such as ``train_loss``/``loss_curve`` and ``valid_loss``; the gene count
        under ``n_genes`` (or ``genes``, a count or a list of genes).

    Returns
    -------
    DataFrame
        As :func:`history_frame`, with ``phase`` counting from 1.

    Examples
    --------
    >>> phases = [{"n_genes": 100, "train_loss": [0.5, 0.4]}, {"n_genes": 500, "train_loss": [0.3]}]
    >>> phase_history_frame(phases)[["phase", "n_genes", "epoch", "train_loss"]]
       phase  n_genes  epoch  train_loss
    0      1      100      1         0.5
    1      1      100      2         0.4
    2      2      500      1         0.3
    """
    frames = []
    for i, record in enumerate(phase_history, start=1):
        record = dict(record)
        genes = record.get("n_genes", record.get("genes"))
        if genes is not None and not np.isscalar(genes):
            genes = len(genes)
        history = record.get("history")
        if history is not None and len(history) and isinstance(history[0], Mapping):
            frames.append(history_frame(history, phase=i, n_genes=genes))
            continue
        curves = {}
        for key, column in _CURVES.items():
            value = record.get(key)
            if value is not None and not np.isscalar(value) and column not in curves:
                curves[column] = list(value)
        n = max((len(v) for v in curves.values()), default=0)
        frame = pd.DataFrame({k: v + [np.nan] * (n - len(v)) for k, v in curves.items()})
        frame.insert(0, "epoch", np.arange(1, n + 1))
        frame.insert(0, "n_genes", genes)
        frame.insert(0, "phase", i)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
