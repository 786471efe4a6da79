"""The figures of :mod:`sktx.pl` (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["de_heatmap", "delta_scatter", "delta_table", "loss"]

# Colour per model; the first (the trained model) stands out, baselines in blues/greys.
PALETTE = ["#d6604d", "#4393c3", "#92c5de", "#878787", "#b2abd2", "#5aae61", "#f4a582"]


def _figure(**kwargs):
    # A Figure outside pyplot: a notebook shows the returned object once (also without
    # `%matplotlib inline`), scripts and the report save it; nothing is left open in
    # pyplot's registry.
    import io

    from matplotlib.figure import Figure

    class SktxFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            return buf.getvalue()

    return SktxFigure(**kwargs)


# ---------------------------------------------------------------------- deltas
def delta_table(adata, *, controls=None, **keys) -> pd.DataFrame:
    """Pseudobulk change vs the control mean, one row per perturbation (cell types pooled).

    Parameters
    ----------
    adata : AnnData or PerturbationData
        Cells with ``obs[perturbation_key]`` (real cells with controls, or predicted cells).
    controls : AnnData or PerturbationData, optional
        Where the control mean comes from (the real cells, for a prediction without
        controls); default ``adata``'s own control cells.
    **keys
        ``perturbation_key``, ``control_label``, ``cell_type_key`` (default: those
        recorded in ``uns['sktx']``, else sktx's defaults).

    Returns
    -------
    DataFrame
        Perturbations x genes (the genes of ``adata`` also in ``controls``).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=200, n_genes=20, n_perturbations=4, random_state=0)
    >>> table = delta_table(adata)
    >>> table.shape[1], "non-targeting" in table.index
    (20, False)
    """
    from sktx.data import group_means, prepare

    data = prepare(adata, **keys, require_control=controls is None, normalize=_norm(adata))
    ref = data if controls is None else prepare(controls, **keys, normalize=_norm(controls))
    genes = [g for g in data.genes if g in set(ref.genes)]
    data, ref = data.select_genes(genes), ref.select_genes(genes)
    ctrl = np.asarray(ref.X32[np.flatnonzero(ref.is_control)].mean(0)).ravel()
    perts = data.perturbations
    code = {p: i for i, p in enumerate(perts)}
    codes = np.array([code.get(lab, -1) for lab in data.labels])
    means = group_means(data.X32, codes, len(perts))
    return pd.DataFrame(means - ctrl, index=pd.Index(perts, name="perturbation"), columns=genes)


def _norm(adata) -> str:
    # sktx predictions are log1p (their uns['log1p'] says so); anything else is decided
    # by sktx.prepare as usual
    return "log1p" if hasattr(adata, "uns") and "log1p" in adata.uns else "auto"


def _as_tables(real, pred, keys) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    if not isinstance(pred, Mapping):
        pred = {"prediction": pred}
    real_table = real if isinstance(real, pd.DataFrame) else delta_table(real, **keys)
    tables = {}
    for name, p in pred.items():
        if isinstance(p, pd.DataFrame):
            tables[name] = p
        else:
            tables[name] = delta_table(
                p, controls=None if isinstance(real, pd.DataFrame) else real, **keys
            )
    return real_table, tables


def _pick(real: pd.DataFrame, pred: dict, perturbations, n: int) -> list[str]:
    if perturbations is not None:
        return [str(p) for p in perturbations]
    # the perturbations with the strongest real response, among the predicted ones:
    # that is where models differ
    predicted = set().union(*(set(t.index) for t in pred.values())) if pred else set()
    strength = real.loc[[p for p in real.index if not predicted or p in predicted]]
    return strength.abs().mean(axis=1).sort_values(ascending=False).index[:n].tolist()


# ---------------------------------------------------------------------- figures
def delta_scatter(
    real,
    pred,
    *,
    perturbations: Sequence[str] | None = None,
    n: int = 6,
    ncols: int = 3,
    **keys,
):
    """Predicted vs real pseudobulk change, one panel per perturbation (Pearson r in the legend).

    Parameters
    ----------
    real : AnnData or DataFrame
        Real cells with controls, or a table of real deltas (perturbations x genes).
    pred : AnnData, DataFrame or dict of them
        Predicted cells (their change is taken vs the real controls), or delta tables;
        a dict names each model.
    perturbations : sequence of str, optional
        Panels to draw; default the ``n`` with the strongest real response.
    n : int, default=6
    ncols : int, default=3
    **keys
        ``perturbation_key``, ``control_label``, ``cell_type_key`` (default: recorded
        in ``uns['sktx']``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sktx
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=30, n_perturbations=4, random_state=0)
    >>> pred = sktx.predict_perturbations(sktx.MeanBaseline().fit(adata), adata, ["G00002"])
    >>> fig = sktx.pl.delta_scatter(adata, {"mean": pred})
    >>> [ax.get_title() for ax in fig.axes if ax.get_visible()]
    ['G00002']
    """
    real, pred = _as_tables(real, pred, keys)
    perts = [p for p in _pick(real, pred, perturbations, n) if p in real.index]
    if not perts:
        raise ValueError("no perturbation has both real and predicted cells to plot.")
    ncol = min(ncols, len(perts))
    nrow = -(-len(perts) // ncol)
    fig = _figure(figsize=(3.4 * ncol, 3.2 * nrow), layout="tight")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False).ravel())
    for ax, pert in zip(axes, perts, strict=False):
        x = real.loc[pert].to_numpy(float)
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        for i, (name, table) in enumerate(pred.items()):
            if pert not in table.index:
                continue
            y = table.loc[pert].reindex(real.columns).to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 and y[ok].std() > 0 else np.nan
            ax.scatter(
                x[ok], y[ok], s=6, alpha=0.55, color=PALETTE[i % len(PALETTE)],
                label=f"{name} (r={r:.2f})", rasterized=True,
            )  # fmt: skip
            if ok.any():
                lo, hi = min(lo, float(y[ok].min())), max(hi, float(y[ok].max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999", lw=0.8, ls=":")
        ax.axhline(0, color="#ccc", lw=0.6)
        ax.axvline(0, color="#ccc", lw=0.6)
        ax.set_title(str(pert), fontsize=10)
        ax.set_xlabel("real delta", fontsize=8)
        ax.set_ylabel("predicted delta", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, loc="upper left", markerscale=2)
    for ax in axes[len(perts) :]:
        ax.set_visible(False)
    return fig


def de_heatmap(
    real,
    pred,
    *,
    perturbations: Sequence[str] | None = None,
    n_perturbations: int = 4,
    n_genes: int = 15,
    **keys,
):
    """Real and predicted change on each perturbation's top DE genes, one colour scale per panel.

    Each panel (a perturbation: the real row, then one row per model) has its own
    symmetric colour scale and colour bar, so a weak perturbation is not washed out
    by a strong one.

    Parameters
    ----------
    real, pred, perturbations, **keys
        As in :func:`delta_scatter`.
    n_perturbations : int, default=4
    n_genes : int, default=15
        Genes per panel: the largest real absolute changes.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sktx
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=30, n_perturbations=4, random_state=0)
    >>> pred = sktx.predict_perturbations(sktx.MeanBaseline().fit(adata), adata, ["G00002"])
    >>> len(sktx.pl.de_heatmap(adata, pred, n_genes=5).axes)  # one panel + its colour bar
    2
    """
    real, pred = _as_tables(real, pred, keys)
    perts = [p for p in _pick(real, pred, perturbations, n_perturbations) if p in real.index]
    if not perts:
        raise ValueError("no perturbation has both real and predicted cells to plot.")
    rows = ["real", *pred]
    fig = _figure(
        figsize=(0.42 * n_genes + 2.9, (0.32 * len(rows) + 0.9) * len(perts)), layout="tight"
    )
    axes = fig.subplots(len(perts), 1, squeeze=False)[:, 0]
    for ax, pert in zip(axes, perts, strict=True):
        genes = real.loc[pert].abs().sort_values(ascending=False).index[:n_genes]
        mat = [real.loc[pert, genes].to_numpy(float)]
        for table in pred.values():
            if pert in table.index:
                mat.append(table.loc[pert].reindex(genes).to_numpy(float))
            else:
                mat.append(np.full(len(genes), np.nan))
        mat = np.vstack(mat)
        vmax = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 0.0
        image = ax.imshow(mat, cmap="RdBu_r", vmin=-(vmax or 1.0), vmax=vmax or 1.0, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xticks(range(len(genes)), genes, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{pert}: top {len(genes)} DE genes", fontsize=9, loc="left")
        bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("delta", fontsize=7)
    return fig


def loss(model_or_history):
    """Training and validation loss per epoch; each phase of a progressive fit its own segment.

    Parameters
    ----------
    model_or_history : fitted estimator or DataFrame
        A fitted :class:`~sktx.PerturbationRegressor`, Pipeline or
        :class:`~sktx.ProgressiveFit`, or a table with ``train_loss`` (and
        ``valid_loss``, ``phase``, ``n_genes``) per epoch, as ``history.csv`` of a run.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd, sktx
    >>> history = pd.DataFrame({"train_loss": [0.5, 0.4, 0.3], "phase": [1, 1, 2]})
    >>> sktx.pl.loss(history).axes[0].get_xlabel()
    'epoch (all phases)'
    """
    from matplotlib.ticker import MaxNLocator

    from sktx.pl._history import training_history

    history = (
        model_or_history
        if isinstance(model_or_history, pd.DataFrame)
        else training_history(model_or_history)
    )
    cols = [] if history is None else [c for c in ("train_loss", "valid_loss") if c in history]
    cols = [c for c in cols if history[c].notna().any()]
    if not cols:
        raise ValueError("no training loss to plot (a baseline, or a model not fitted yet).")
    fig = _figure(figsize=(7.5, 3.4), layout="tight")
    ax = fig.subplots()
    x = np.arange(1, len(history) + 1)
    styles = {
        "train_loss": ("train", "-o", "#d6604d"),
        "valid_loss": ("validation", "-s", "#4393c3"),
    }
    phase = history["phase"].to_numpy() if "phase" in history else np.ones(len(history), int)
    starts = np.flatnonzero(np.r_[True, phase[1:] != phase[:-1]])
    bounds = [*starts.tolist(), len(history)]
    for col in cols:
        label, marker, color = styles[col]
        y = history[col].to_numpy(float)
        # one segment per phase: losses over different gene sets are not one curve
        for i in range(len(starts)):
            seg = slice(bounds[i], bounds[i + 1])
            ax.plot(
                x[seg], y[seg], marker, ms=3, lw=1.5, color=color, label=label if i == 0 else None
            )
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.18 * (high - low))  # room for the phase labels
    if len(starts) > 1:
        left = ax.get_xlim()[0]
        for i, start in enumerate(starts):
            if i:
                ax.axvline(start + 0.5, color="#555", ls="--", lw=1)
            genes = history["n_genes"].iloc[start] if "n_genes" in history else None
            text = f"phase {phase[start]}" + (
                f"\n{int(genes)} genes" if genes is not None and genes == genes else ""
            )
            ax.text(
                max(start + 0.6, left + 0.05), 0.98, text, transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="#333",
            )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper right", ncols=2)
    return fig
