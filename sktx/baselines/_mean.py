"""MeanBaseline: the mean perturbed profile (cell-eval's cell-mean baseline)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sktx._docs import doc_params
from sktx.baselines._base import _Baseline

__all__ = ["MeanBaseline"]


@doc_params
class MeanBaseline(_Baseline):
    """Predict the mean perturbed profile: cell-eval's cell-mean baseline.

    Every perturbed query cell gets the mean of the training pseudobulks of
    all labels of its cell type — control included, exactly as cell-eval's
    ``build_base_mean_adata`` builds the Virtual Cell Challenge baseline.
    A cell type never seen in ``fit`` gets its query's control mean plus the
    mean response of the fitted cell types (each one's mean profile minus its
    control profile, averaged), with an
    :class:`~sktx.context.UnseenContextWarning`.

    Parameters
    ----------
    {doc_keys}
    cell_type_key : str, optional
        One mean profile per cell type.
    {doc_cells}

    Attributes
    ----------
    mean_profiles_ : DataFrame
        Predicted log1p profile per cell type.
    control_profiles_ : DataFrame
        Mean log1p control profile per cell type.
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    See Also
    --------
    sktx.metrics.build_mean_baseline : The same baseline built from real data.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> pred = MeanBaseline().fit(adata).predict(make_query(adata))
    >>> bool((pred.X >= 0).all())
    True
    """

    def _fit(self, pb) -> None:
        frame = pd.DataFrame(pb.means, columns=pb.genes)
        self.mean_profiles_ = frame.groupby(pb.groups["cell_type"].to_numpy()).mean()

    def _profile(self, label: str, cell_type: str) -> np.ndarray:
        return self.mean_profiles_.loc[cell_type].to_numpy()

    _unseen_action = (
        "the query's control mean plus the mean response (mean profile minus control) "
        "averaged over the fitted cell types"
    )

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        # the same for every label: the cell type's mean response
        return self._profile(label, cell_type) - self.control_profiles_.loc[cell_type].to_numpy()
