"""The one place where :mod:`sktx.metrics` reads AnnData.

Every check and matrix read of the metrics goes through this module, so the data
layer behind it (``validate_adata``/``get_matrix`` today) can be swapped in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sktx.data import DataContractError, PerturbationData, get_matrix, group_means, prepare

__all__ = [
    "Cells",
    "DataContractError",
    "check",
    "group_means",
    "matrix",
    "prepare_input",
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


def prepare_input(adata, **keys) -> PerturbationData:
    """``adata`` checked and normalised once (:func:`sktx.prepare`); a prepared object as is."""
    return prepare(adata, **keys)


def check(adata, *, perturbation_key: str, control_label: str, cell_type_key: str | None):
    """Validate ``adata`` against the data contract (raises DataContractError)."""
    return prepare_input(
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
    """Prepare ``adata`` (unless ``validate=False``) and read what the metrics need.

    Prepared data give canonical labels and log1p values (counts are normalised
    exactly as for the real cells, so a counts prediction is never scored
    against log1p data); ``validate=False`` reads an AnnData sktx built itself.
    """
    if validate or isinstance(adata, PerturbationData):
        data = check(
            adata,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
        )
        return Cells(data.X, data.labels, data.cell_types, data.genes)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    types = None if cell_type_key is None else adata.obs[cell_type_key].astype(str).to_numpy()
    return Cells(get_matrix(adata), labels, types, pd.Index(adata.var_names))


def matrix(adata):
    """The expression matrix of ``adata`` (``X``; dense or CSR), unchecked."""
    return get_matrix(adata)
