"""The one place where :mod:`sktx.metrics` reads AnnData.

Every check and matrix read of the metrics goes through this module, so the data
layer behind it (``validate_adata``/``get_matrix`` today) can be swapped in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sktx._pseudobulk import group_means
from sktx._validation import (
    DataContractError,
    get_matrix,
    is_log_normalized,
    log_normalize,
    validate_adata,
)

__all__ = [
    "Cells",
    "DataContractError",
    "as_log1p",
    "check",
    "group_means",
    "matrix",
    "read_cells",
]


@dataclass(frozen=True)
class Cells:
    """What the metrics read of one AnnData: matrix, labels, cell types, genes.

    Attributes
    ----------
    X : ndarray or csr_matrix of shape (n_cells, n_genes)
        The expression matrix as stored (sparse stays sparse).
    labels : ndarray of str
        ``obs[perturbation_key]``.
    types : ndarray of str or None
        ``obs[cell_type_key]``, None without a cell-type key.
    genes : Index
        ``var_names``.
    """

    X: object
    labels: np.ndarray
    types: np.ndarray | None
    genes: pd.Index


def check(adata, *, perturbation_key: str, control_label: str, cell_type_key: str | None):
    """Validate ``adata`` against the data contract (raises DataContractError)."""
    validate_adata(
        adata,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
    )


def read_cells(
    adata,
    *,
    perturbation_key: str,
    control_label: str,
    cell_type_key: str | None,
    validate: bool = True,
) -> Cells:
    """Validate ``adata`` (unless ``validate=False``) and read what the metrics need."""
    if validate:
        check(
            adata,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
        )
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    types = None if cell_type_key is None else adata.obs[cell_type_key].astype(str).to_numpy()
    return Cells(get_matrix(adata), labels, types, pd.Index(adata.var_names))


def matrix(adata):
    """The expression matrix of ``adata`` (``X``; dense or CSR), unchecked."""
    return get_matrix(adata)


def as_log1p(adata):
    """``adata`` itself when it holds log1p values, else a log1p-normalised copy."""
    return adata if is_log_normalized(adata) else log_normalize(adata)
