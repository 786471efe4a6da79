"""Matplotlib figures of a run, returned as PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

__all__ = ["heatmap_png", "loss_png", "scatter_png", "throughput_png"]

_DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _pyplot().close(fig)  # a no-op for the sktx.pl figures, which pyplot never held
    return buf.getvalue()


def _global_epoch(history: pd.DataFrame) -> np.ndarray:
    return np.arange(1, len(history) + 1)


def loss_png(history: pd.DataFrame) -> bytes | None:
    """Training and validation loss per epoch, phase boundaries as dashed lines."""
    from sktx.pl import loss

    try:
        return _png(loss(history))
    except ValueError:  # no loss recorded (e.g. a baseline stand-in)
        return None


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


def scatter_png(
    real: pd.DataFrame, pred: dict[str, pd.DataFrame], *, models: list[str], n: int = 6
) -> bytes | None:
    """Predicted vs real pseudobulk delta, one panel per held-out perturbation."""
    from sktx.pl import delta_scatter

    if real is None or real.empty or not models:
        return None
    return _png(delta_scatter(real, {m: pred[m] for m in models}, n=n))


def heatmap_png(
    real: pd.DataFrame,
    pred: dict[str, pd.DataFrame],
    *,
    models: list[str],
    n_perturbations: int = 4,
    n_genes: int = 15,
) -> bytes | None:
    """Real vs predicted delta on each perturbation's top DE genes (a colour scale per panel)."""
    from sktx.pl import de_heatmap

    if real is None or real.empty:
        return None
    tables = {m: pred[m] for m in models}
    return _png(de_heatmap(real, tables, n_perturbations=n_perturbations, n_genes=n_genes))
