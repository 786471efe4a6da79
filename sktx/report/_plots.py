"""Matplotlib figures of a run, returned as PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

__all__ = ["heatmap_png", "loss_png", "scatter_png", "throughput_png"]

_DPI = 110
# Colour per model role; baselines in greys/blues so the trained model stands out.
_PALETTE = ["#d6604d", "#4393c3", "#92c5de", "#878787", "#b2abd2", "#5aae61", "#f4a582"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _global_epoch(history: pd.DataFrame) -> np.ndarray:
    return np.arange(1, len(history) + 1)


def loss_png(history: pd.DataFrame) -> bytes | None:
    """Training and validation loss per epoch, phase boundaries as dashed lines."""
    from matplotlib.ticker import MaxNLocator

    if history is None or history.empty:
        return None
    cols = [c for c in ("train_loss", "valid_loss") if c in history and history[c].notna().any()]
    if not cols:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    x = _global_epoch(history)
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
        # One segment per phase: losses over different gene sets are not one curve.
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
            text = f"phase {phase[start]}" + (f"\n{int(genes)} genes" if genes == genes else "")
            ax.text(
                max(start + 0.6, left + 0.05), 0.98, text, transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="#333",
            )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper right", ncols=2)
    fig.tight_layout()
    return _png(fig)


def throughput_png(history: pd.DataFrame) -> bytes | None:
    """Cells/s and peak resident memory per epoch."""
    if history is None or history.empty:
        return None
    panels = [
        (c, t) for c, t in (
            ("cells_per_s", "training cells / s"),
            ("peak_rss_mb", "peak RSS (MB)"),
            ("peak_rss_gb", "peak RSS (GB)"),
        )
        if c in history and history[c].notna().any()
    ]  # fmt: skip
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 2.8), squeeze=False)
    x = _global_epoch(history)
    for ax, (col, title) in zip(axes[0], panels, strict=True):
        ax.plot(x, history[col].to_numpy(float), "-o", ms=3, color="#4d4d4d")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _pick(real: pd.DataFrame, n: int) -> list[str]:
    # Show the perturbations with the strongest real response: that is where models differ.
    strength = real.abs().mean(axis=1).sort_values(ascending=False)
    return strength.index[:n].tolist()


def scatter_png(
    real: pd.DataFrame, pred: dict[str, pd.DataFrame], *, models: list[str], n: int = 6
) -> bytes | None:
    """Predicted vs real pseudobulk delta, one panel per held-out perturbation."""
    if real is None or real.empty or not models:
        return None
    perts = _pick(real, n)
    plt = _pyplot()
    ncol = min(3, len(perts))
    nrow = -(-len(perts) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.2 * nrow), squeeze=False)
    for ax, pert in zip(axes.ravel(), perts, strict=False):
        x = real.loc[pert].to_numpy(float)
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        for i, name in enumerate(models):
            if pert not in pred[name].index:
                continue
            y = pred[name].loc[pert].reindex(real.columns).to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 and y[ok].std() > 0 else np.nan
            ax.scatter(
                x[ok], y[ok], s=6, alpha=0.55, color=_PALETTE[i % len(_PALETTE)],
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
    for ax in axes.ravel()[len(perts) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def heatmap_png(
    real: pd.DataFrame,
    pred: dict[str, pd.DataFrame],
    *,
    models: list[str],
    n_perturbations: int = 4,
    n_genes: int = 15,
) -> bytes | None:
    """Real vs predicted delta on each perturbation's top differentially expressed genes."""
    if real is None or real.empty:
        return None
    perts = _pick(real, n_perturbations)
    plt = _pyplot()
    rows = ["real", *models]
    fig, axes = plt.subplots(
        len(perts), 1, figsize=(0.42 * n_genes + 2.4, (0.32 * len(rows) + 0.9) * len(perts)),
        squeeze=False,
    )  # fmt: skip
    image = None
    vmax = 0.0
    blocks = []
    for pert in perts:
        genes = real.loc[pert].abs().sort_values(ascending=False).index[:n_genes]
        mat = [real.loc[pert, genes].to_numpy(float)]
        for name in models:
            frame = pred[name]
            if pert in frame.index:
                mat.append(frame.loc[pert].reindex(genes).to_numpy(float))
            else:
                mat.append(np.full(len(genes), np.nan))
        mat = np.vstack(mat)
        vmax = max(vmax, float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 0.0)
        blocks.append((pert, genes, mat))
    vmax = vmax or 1.0
    for ax, (pert, genes, mat) in zip(axes[:, 0], blocks, strict=True):
        image = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xticks(range(len(genes)), genes, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{pert}: top {len(genes)} DE genes", fontsize=9, loc="left")
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="delta vs control")
    return _png(fig)
