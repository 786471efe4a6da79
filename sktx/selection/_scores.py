"""Evidence scores that order genes inside a category (variability, response)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from sktx.data import column_moments


def _percentile(x: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] (NaN ranked lowest), used to put scores on one scale."""
    x = np.where(np.isfinite(x), x, -np.inf)
    return (rankdata(x) - 1) / max(len(x) - 1, 1)


def _order(scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Indices sorted by descending score; ties keep `var` order (deterministic)."""
    if idx is None:
        idx = np.arange(len(scores))
    s = np.where(np.isfinite(scores[idx]), scores[idx], -np.inf)
    return idx[np.argsort(-s, kind="stable")]


def _log_variance(X) -> np.ndarray:
    if sp.issparse(X):
        from sklearn.utils.sparsefuncs import mean_variance_axis

        return np.asarray(mean_variance_axis(X, axis=0)[1], dtype=np.float64)
    return np.asarray(X, dtype=np.float64).var(axis=0)


def _seurat_dispersions_norm(mean: np.ndarray, var: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """scanpy's ``flavor="seurat"`` normalised dispersions from per-gene moments.

    Same steps as ``scanpy.pp.highly_variable_genes`` (scanpy 1.11,
    ``_highly_variable_genes_single_batch``) once the mean and unbiased
    variance of ``expm1(X)`` are known, so they can be accumulated over row
    chunks of a backed file.
    """
    mean = np.array(mean, dtype=np.float64)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()  # a bin with a single gene: its dispersion_norm is 1
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    return ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy(dtype=np.float64)


def _seurat_scores(X, log_base: float | None) -> np.ndarray:
    """Seurat normalised dispersions of log1p data ``X`` (matrix or backed reader)."""
    moments = column_moments(X, log_base=log_base)
    return _seurat_dispersions_norm(moments["mean_expm1"], moments["var_expm1"])


def _has_skmisc() -> bool:
    try:
        import skmisc.loess  # noqa: F401
    except ImportError:
        return False
    return True


def _same_params(a: dict, b: dict) -> bool:
    """Parameters equal value by value (gene-set dicts, lists and arrays included)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if x is y:
            continue
        try:
            if type(x) is not type(y) or not bool(np.all(x == y)):
                return False
        except (TypeError, ValueError):
            return False
    return True
