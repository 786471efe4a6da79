"""Library-size normalisation + log1p, the one transform sktx applies to raw counts.

Row-local, so the streaming reader (:mod:`sktx.data._backed`) calls it on row
chunks and gets the same values as on the whole matrix.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TARGET_SUM", "log_normalize_inplace"]

#: Counts per cell after normalisation (fixed, so training and query cells match).
TARGET_SUM = 1e4


def log_normalize_inplace(adata, target_sum: float, *, keep_counts: bool = True) -> None:
    """Normalise ``adata`` (owned by the caller) in place; counts go to a layer.

    Row-local, so the streaming reader (:mod:`sktx.data._backed`) calls it on row
    chunks and gets the same values as on the whole matrix.
    """
    import scanpy as sc

    from sktx._threads import keep_torch_threads

    if not np.issubdtype(adata.X.dtype, np.floating):
        adata.X = adata.X.astype(np.float32)
    if keep_counts:
        adata.layers["counts"] = adata.X.copy()
    # A stale marker would make scanpy warn and skip nothing; it is rewritten below.
    adata.uns.pop("log1p", None)
    with keep_torch_threads():  # numba's first use resets the thread count torch shares
        sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
