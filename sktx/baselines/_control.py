"""ControlBaseline: predict no change."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted

from sktx._docs import doc_params
from sktx.baselines._base import _Baseline

__all__ = ["ControlBaseline"]


@doc_params
class ControlBaseline(_Baseline):
    """Predict no change: every query cell keeps its own (control) expression.

    Parameters
    ----------
    {doc_keys}
    cell_type_key : str, optional
        ``obs`` column with cell types.

    Attributes
    ----------
    control_profiles_ : DataFrame
        Mean log1p control profile per cell type (``""`` without a key).
    perturbations_ : list of str
        Perturbations seen in ``fit``.
    feature_names_in_ : ndarray of str
        Training genes.
    n_features_in_ : int

    See Also
    --------
    MeanBaseline, AdditiveBaseline, LinearBaseline

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> pred = ControlBaseline().fit(adata).predict(make_query(adata))
    >>> pred.n_vars
    40
    """

    _constraints: ClassVar[dict] = {}  # no `cells` option

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
    ) -> None:
        # no `cells` option: the query's own cells are the prediction
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key

    def _fit(self, pb) -> None:
        return None

    def predict(self, adata, *, output="log1p", all_genes=False, random_state=None):
        """Return the query cells' own expression on the training genes.

        ``output="counts"`` resamples counts from the count model (see
        :meth:`MeanBaseline.predict`); ``all_genes=True`` keeps every query gene.
        """
        check_is_fitted(self)
        adata = self._query_data(adata)
        X = self._read_input(adata, training=False).X
        X = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float64)
        return self._output(X, adata, output, all_genes, random_state)
