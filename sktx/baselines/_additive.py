"""AdditiveBaseline: control plus the sum of single-perturbation deltas."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from sktx._docs import doc_params
from sktx._effects import fit_by_cell_type
from sktx._params import Options
from sktx.baselines._base import _Baseline, split_targets

__all__ = ["AdditiveBaseline"]


@doc_params
class AdditiveBaseline(_Baseline):
    """Control plus the sum of single-perturbation deltas.

    A label seen in training gets its own measured delta. An unseen label
    ``"A+B"`` gets ``delta(A) + delta(B)`` from the training singles; a
    target never seen as a single contributes the mean training delta (so an
    unseen single is predicted as control + mean delta). Deltas are pseudobulk
    log1p differences to the controls of the same cell type. A cell type never
    seen in ``fit`` gets its query's control mean plus the label's delta
    averaged over the fitted cell types that measured it ("the same delta as
    in the fitted cell types"), with an
    :class:`~sktx.context.UnseenContextWarning`.

    Parameters
    ----------
    {doc_keys}
    cell_type_key : str, optional
        Deltas per cell type.
    {doc_cells}
    effects : {"singles", "joint"}, default="singles"
        Where a target's effect comes from. ``"singles"``: its single
        perturbation only (the classic additive baseline). ``"joint"``: a
        ridge fit over every training label, singles and combinations
        (``delta(A+B) = 2 * shared + specific[A] + specific[B]``, penalty by
        leave-one-label-out CV), so a target seen only inside combinations
        gets an effect too and an unseen target gets the typical effect
        ``shared``. This is the baseline
        :class:`~sktx.regressor.PerturbationRegressor` adds its residual to.

    Attributes
    ----------
    deltas_ : DataFrame
        Training deltas, index (perturbation, cell type).
    mean_deltas_ : DataFrame
        Mean training delta per cell type.
    effects_ : dict
        ``effects="joint"`` only: the fitted
        :class:`~sktx._effects.TargetEffects` per cell type (ridge penalty in
        ``effects_[ct].lam``).
    control_profiles_ : DataFrame
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    Notes
    -----
    On held-out Norman K562 combinations this simple sum was the best of the
    simple predictors measured in the design phase (see docs/evaluation.md).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = AdditiveBaseline().fit(adata)
    >>> model.predict(make_query(adata, perturbations=["G00001+G00002"])).n_obs > 0
    True
    """

    _constraints: ClassVar[dict] = {
        **_Baseline._constraints,
        "effects": Options("singles", "joint"),
    }

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        cells: str = "profile",
        effects: str = "singles",
    ) -> None:
        super().__init__(
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
            cells=cells,
        )
        self.effects = effects

    def _fit(self, pb) -> None:
        deltas, groups = pb.deltas(self.control_label)
        index = pd.MultiIndex.from_frame(groups[["perturbation", "cell_type"]])
        self.deltas_ = pd.DataFrame(deltas, index=index, columns=pb.genes)
        self.mean_deltas_ = self.deltas_.groupby(level="cell_type").mean()
        if self.effects == "joint":
            fits = fit_by_cell_type(
                deltas,
                groups["perturbation"].tolist(),
                groups["cell_type"].tolist(),
                self.control_label,
            )
            self.effects_ = {ct: fx for ct, (fx, _) in fits.items()}

    _unseen_action = (
        "the query's control mean plus the label's delta averaged over the fitted cell types "
        "that measured it (else over its prediction in every fitted cell type)"
    )

    def _unseen_delta(self, label: str) -> np.ndarray:
        measured = [ct for ct in self.control_profiles_.index if (label, ct) in self.deltas_.index]
        cts = measured or list(self.control_profiles_.index)
        return np.mean([self._delta(label, ct) for ct in cts], axis=0)

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        if (label, cell_type) in self.deltas_.index:
            return self.deltas_.loc[(label, cell_type)].to_numpy()
        if self.effects == "joint":
            targets = split_targets(label, self.control_label) or [label]
            return self.effects_[cell_type].predict(targets)
        total = np.zeros(self.deltas_.shape[1])
        for target in split_targets(label, self.control_label):
            if (target, cell_type) in self.deltas_.index:
                total += self.deltas_.loc[(target, cell_type)].to_numpy()
            else:
                total += self.mean_deltas_.loc[cell_type].to_numpy()
        return total
