"""Checks a run makes before the long work starts, so a bad input fails in one line and
not after training (or inside the simulator, or with an ARPACK error)."""

from __future__ import annotations

import os

import numpy as np

from sktx.cli._app import BadInput

#: Columns ``deltas.csv.gz`` writes beside one column per gene (``RunRecord.save``).
REPORT_COLUMNS = ("source", "perturbation")


def check_run_data(data) -> None:
    """Refuse data a run cannot report or fit: gene names that are report columns, an
    all-zero matrix. ``data`` is the run's PerturbationData."""
    clash = sorted({str(g) for g in data.genes} & set(REPORT_COLUMNS))
    if clash:
        raise BadInput(
            f"--data: gene(s) {clash} in `var_names` have the name of a column the run writes "
            f"beside the genes in deltas.csv.gz ({', '.join(REPORT_COLUMNS)}); rename them in "
            "the file (e.g. `adata.var_names = [g + '_gene' if g == 'source' else g for g in "
            "adata.var_names]`)"
        )
    X = data.X
    if hasattr(X, "nnz"):
        zero = X.nnz == 0 or not np.any(X.data)
    elif isinstance(X, np.ndarray):
        zero = not np.any(X)
    else:  # a backed reader: checked chunk by chunk by prepare, not summed here
        zero = False
    if zero:
        raise BadInput(
            f"--data: every value of the expression matrix is zero ({data.n_obs} cells x "
            f"{data.n_vars} genes); check that the file holds the data (counts may be in a "
            "layer the file does not expose as X)"
        )


def _available_bytes() -> int | None:
    """Memory available to new allocations (Linux ``MemAvailable``), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def demo_bytes(n_genes: int, n_cells: int) -> int:
    """Peak memory of simulating ``n_genes`` x ``n_cells`` for ``--data demo`` (bytes).

    The simulator builds a dense gene x gene network (float64) besides cells x genes
    matrices. An upper bound of peaks measured with ``ru_maxrss`` on this machine
    (2,000 x 4,000: 0.39 GB; 8,000 x 4,000: 0.79 GB; 8,000 x 16,000: 1.03 GB).
    """
    return int(8 * n_genes**2 + 4 * n_genes * n_cells + 4e8)


def check_demo_memory(n_genes: int, n_cells: int, *, available: int | None = None) -> None:
    """Refuse a simulated screen that cannot fit in memory, saying what would fit."""
    available = _available_bytes() if available is None else available
    need = demo_bytes(n_genes, n_cells)
    if available is None or need <= available:
        return
    lo, hi = 50, max(n_genes, 50)
    while lo < hi:  # largest gene count that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if demo_bytes(mid, n_cells) <= available else (lo, mid - 1)
    fit = lo
    raise BadInput(
        f"--genes {n_genes}: simulating {n_genes} genes x {n_cells} cells needs about "
        f"{need / 1e9:.3g} GB, {available / 1e9:.3g} GB are available; at most about "
        f"--genes {fit} fits (or pass an .h5ad with --data)"
    )
