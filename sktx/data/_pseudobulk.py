"""Pseudobulk means and deltas per (perturbation, cell type), sparse-friendly.

One helper shared by the metrics, the baselines and the regressor: group means
are computed as a sparse indicator matrix times ``X``, so a CSR matrix is never
densified cell by cell (only the ``n_groups x n_genes`` result is dense).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.data._backed import row_chunks
from sktx.data._checks import get_matrix
from sktx.data._errors import DataContractError

__all__ = ["Pseudobulk", "group_means", "pseudobulk"]


def group_means(X, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of ``X`` in each group, as a dense float64 array.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_cells, n_genes)
        Expression; CSR stays sparse.
    codes : ndarray of int, shape (n_cells,)
        Group of each row in ``[0, n_groups)``; rows with a negative code are
        ignored.
    n_groups : int
        Number of groups.

    Returns
    -------
    ndarray of shape (n_groups, n_genes)
        Group means (a group without rows gets NaN).

    Examples
    --------
    >>> import numpy as np
    >>> group_means(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2).ravel()
    array([2., 5.])
    """
    codes = np.asarray(codes)
    counts = np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.float64)
    with np.errstate(divide="ignore"):
        weight = np.where(counts > 0, 1.0 / counts, np.nan)
    means = np.zeros((n_groups, X.shape[1]), dtype=np.float64)
    # Fixed row chunks for in-memory and backed (`BackedRows`) matrices alike, so
    # both sum in the same order and agree exactly; only needed rows are read.
    for start, stop in row_chunks(X.shape[0]):
        rows = start + np.flatnonzero(codes[start:stop] >= 0)
        if rows.size == 0:
            continue
        indicator = sp.csr_matrix(
            (weight[codes[rows]], (codes[rows], np.arange(rows.size))),
            shape=(n_groups, rows.size),
        )
        part = indicator @ X[rows]
        means += part.toarray() if sp.issparse(part) else np.asarray(part)
    means[counts == 0] = np.nan
    return means


@dataclass(frozen=True)
class Pseudobulk:
    """Mean expression per (perturbation, cell type).

    Attributes
    ----------
    means : ndarray of shape (n_groups, n_genes)
        Mean of ``X`` over the cells of each group (float64).
    groups : DataFrame
        One row per group with columns ``perturbation``, ``cell_type`` (``None``
        without a cell-type key) and ``n_cells``; row ``i`` describes ``means[i]``.
    genes : Index
        Gene names (columns of ``means``).
    """

    means: np.ndarray
    groups: pd.DataFrame
    genes: pd.Index

    def row(self, perturbation: str, cell_type: str | None = None) -> int:
        """Row of ``means`` holding (``perturbation``, ``cell_type``); -1 if absent."""
        hit = (self.groups["perturbation"] == perturbation).to_numpy()
        if cell_type is not None:
            hit &= (self.groups["cell_type"] == cell_type).to_numpy()
        idx = np.flatnonzero(hit)
        return int(idx[0]) if idx.size else -1

    def deltas(self, control_label: str) -> tuple[np.ndarray, pd.DataFrame]:
        """Each non-control group minus the control of its own cell type.

        Returns
        -------
        deltas : ndarray of shape (n_perturbed_groups, n_genes)
        groups : DataFrame
            The rows of :attr:`groups` the deltas belong to.

        Raises
        ------
        DataContractError
            When a cell type has perturbed cells but no control cells.
        """
        is_ctrl = (self.groups["perturbation"] == control_label).to_numpy()
        ctrl_rows = {
            ct: i
            for i, ct in zip(
                np.flatnonzero(is_ctrl), self.groups["cell_type"][is_ctrl], strict=True
            )
        }
        pert = self.groups[~is_ctrl]
        missing = sorted({str(ct) for ct in pert["cell_type"] if ct not in ctrl_rows})
        if missing:
            raise DataContractError(
                f"cell types {missing} have perturbed cells but no `{control_label}` cells; "
                "deltas are taken against the controls of the same cell type. Add controls "
                "for them or drop those cells."
            )
        ctrl_idx = np.array([ctrl_rows[ct] for ct in pert["cell_type"]], dtype=int)
        pert_idx = np.flatnonzero(~is_ctrl)
        deltas = self.means[pert_idx] - self.means[ctrl_idx]
        return deltas, pert.reset_index(drop=True)


def pseudobulk(
    adata,
    key: str = "target_gene",
    *,
    cell_type_key: str | None = None,
    layer: str | None = None,
    matrix=None,
) -> Pseudobulk:
    """Mean expression of every (perturbation, cell type) group.

    Parameters
    ----------
    adata : AnnData or PerturbationData
        Cells x genes; ``X`` (or ``layer``) dense or CSR. Values are averaged
        as they are (pass log1p data to get log1p pseudobulks, as cell-eval does).
    key : str, default="target_gene"
        ``obs`` column with the perturbation labels.
    cell_type_key : str, optional
        ``obs`` column with the cell type; groups are then (label, cell type).
    layer : str, optional
        Read this layer instead of ``X``.
    matrix : matrix or BackedRows, optional
        Average these rows instead of ``X``/``layer`` (same cells as
        ``adata``); e.g. a streaming reader of a backed file.

    Returns
    -------
    Pseudobulk
        Groups sorted by (perturbation, cell type).

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> obs = pd.DataFrame({"target_gene": ["non-targeting", "A", "A"]}, index=list("xyz"))
    >>> pb = pseudobulk(ad.AnnData(np.array([[0.0], [1.0], [3.0]]), obs=obs))
    >>> pb.means[pb.row("A")]
    array([2.])
    """
    if hasattr(adata, "labels"):  # a PerturbationData: canonical labels, its own keys
        labels, types, cell_type_key = adata.labels, adata.cell_types, adata.cell_type_key
    else:
        labels = adata.obs[key].astype(str).to_numpy()
        types = None if cell_type_key is None else adata.obs[cell_type_key].astype(str).to_numpy()
    if cell_type_key is None:
        frame = pd.DataFrame({"perturbation": labels, "cell_type": None})
    else:
        frame = pd.DataFrame({"perturbation": labels, "cell_type": types})
    grouped = frame.groupby(["perturbation", "cell_type"], sort=True, dropna=False)
    codes = grouped.ngroup().to_numpy()
    sizes = grouped.size()
    groups = sizes.reset_index(name="n_cells")
    if cell_type_key is None:
        groups["cell_type"] = None
    if matrix is None:
        matrix = adata.X if hasattr(adata, "labels") else get_matrix(adata, layer)
    X = matrix
    means = group_means(X, codes, len(groups))
    return Pseudobulk(means=means, groups=groups, genes=pd.Index(adata.var_names))


def _nonzero_sums_by_chunks(reader) -> tuple[np.ndarray, np.ndarray]:
    """Column sums and non-zero counts of a row reader (a backed file), chunk by chunk.

    Adds the values one by one, in row order, in the matrix dtype: the same
    sequence of additions as ``csr.sum(0)`` on the whole matrix, so a backed
    fit gets the same numbers as an in-memory one.
    """
    n_rows, n_genes = reader.shape
    sums, counts = None, np.zeros(n_genes, dtype=np.int64)
    for start, stop in row_chunks(n_rows):
        block = sp.csr_matrix(reader[np.arange(start, stop)])
        if sums is None:
            sums = np.zeros(n_genes, dtype=block.dtype)
        np.add.at(sums, block.indices, block.data)
        counts += np.bincount(block.indices[block.data != 0], minlength=n_genes)
    return (np.zeros(n_genes) if sums is None else sums), counts


def nonzero_level(X) -> np.ndarray:
    """Mean of the non-zero values of each gene (column), float32.

    Genes with no non-zero value get the mean non-zero value of all genes
    (1.0 for an all-zero matrix). Used as the level at which a prediction
    switches on cells that are zero in the controls.

    Examples
    --------
    >>> import numpy as np
    >>> nonzero_level(np.array([[0.0, 2.0, 0.0], [1.0, 4.0, 0.0]])).tolist()
    [1.0, 3.0, 2.0]
    """
    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        sums, counts = _nonzero_sums_by_chunks(X)
    elif sp.issparse(X):
        X = sp.csr_matrix(X)
        sums = np.asarray(X.sum(0)).ravel()
        counts = np.bincount(X.indices[X.data != 0], minlength=X.shape[1])
    else:
        X = np.asarray(X)
        sums, counts = X.sum(0), (X != 0).sum(0)
    total = counts.sum()
    fallback = sums.sum() / total if total else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    return level.astype(np.float32)
