"""Fit/predict plumbing shared by the baselines: reading AnnData, building the output."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

# Every import of the data layer the baselines use is here, so that moving to
# `sktx.data` touches this module only.
from sktx._counts import prediction_output
from sktx._params import Options, check_params
from sktx._scoring import SCORE_DOC, delta_mse_score
from sktx.context import given_basal, warn_unseen
from sktx.data import DataContractError, nonzero_level, prepare, pseudobulk, split_targets

# The per-baseline modules take these from here too.
__all__ = ["DataContractError", "split_targets"]

# Cell-type key used internally when no cell_type_key is given.
_ALL = ""


class _Input(NamedTuple):
    """What a baseline reads: the prepared data and its log1p matrix."""

    info: Any  # sktx.PerturbationData: labels, control mask, cell types
    data: Any  # the same PerturbationData
    X: Any  # log1p matrix; for a query, its columns are the training genes in order


class _Baseline(RegressorMixin, BaseEstimator):
    """Shared fit/predict plumbing; subclasses implement ``_fit`` and ``_delta``."""

    #: what each parameter may be (sktx._params); subclasses extend it
    _constraints: ClassVar[dict] = {"cells": Options("profile", "controls")}

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        cells: str = "profile",
    ) -> None:
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.cells = cells

    def _read_input(self, adata, *, training: bool) -> _Input:
        """Validate ``adata`` and read it as log1p: the baselines' only data access.

        ``training=True`` (``fit``) needs perturbed cells; otherwise (``predict``)
        the query must hold the training genes, and ``X`` has them as columns.
        """
        data = prepare(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            require_control=training,
            require_perturbed=training,
        )
        if training:
            return _Input(data, data, data.X)
        query = data.select_genes(self.feature_names_in_, what="training genes")
        return _Input(query, query, query.X)

    def fit(self, adata, y=None):
        """Learn from the cells of ``adata``.

        Parameters
        ----------
        adata : AnnData
            Cells x genes with control cells and perturbed cells; counts or log1p.
        y : ignored

        Returns
        -------
        self
        """
        check_params(self)
        data = self._read_input(adata, training=True)
        pb = pseudobulk(data.data)
        groups = pb.groups.fillna({"cell_type": _ALL})
        if data.data.control_label != self.control_label:
            # keys left at their defaults come from uns['sktx'] (sktx.prepare); the
            # subclasses name the control group by `control_label`
            is_ctrl = (groups["perturbation"] == data.data.control_label).to_numpy()
            groups.loc[is_ctrl, "perturbation"] = self.control_label
        pb = type(pb)(pb.means, groups, pb.genes)
        self.feature_names_in_ = np.asarray(adata.var_names, dtype=object)
        self.n_features_in_ = adata.n_vars
        is_ctrl = (groups["perturbation"] == self.control_label).to_numpy()
        self.control_profiles_ = pd.DataFrame(
            pb.means[is_ctrl], index=groups["cell_type"][is_ctrl].to_numpy(), columns=pb.genes
        )
        self.perturbations_ = sorted(set(groups["perturbation"][~is_ctrl]))
        # typical non-zero level per gene, for cells="controls"
        self.nonzero_level_ = nonzero_level(data.X)
        self._fit(pb)
        return self

    def _fit(self, pb) -> None:
        raise NotImplementedError

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        raise NotImplementedError

    def _profile(self, label: str, cell_type: str) -> np.ndarray:
        return self.control_profiles_.loc[cell_type].to_numpy() + self._delta(label, cell_type)

    #: What the :class:`~sktx.context.UnseenContextWarning` says is predicted.
    _unseen_action = "the query's control mean plus the delta averaged over the fitted cell types"

    def _unseen_delta(self, label: str) -> np.ndarray:
        """Delta in a cell type never fitted: the mean of its deltas in the fitted ones."""
        return np.mean([self._delta(label, ct) for ct in self.control_profiles_.index], axis=0)

    def predict(self, adata, *, output="log1p", all_genes=False, random_state=None):
        """Predict the expression of each query cell under its perturbation label.

        Parameters
        ----------
        adata : AnnData
            Query cells (usually control cells relabelled, see
            :func:`sktx.model_selection.make_query`) holding at least the
            training genes; counts or log1p.
        output : {"log1p", "counts"}, default="log1p"
            ``"counts"``: raw integer counts (CSR) sampled at each query cell's
            library size from a negative binomial whose normalised mean is the
            log1p prediction (see :mod:`sktx._counts`).
        all_genes : bool, default=False
            Return the query's whole gene axis (other genes: the query's own values).
        random_state : int, RandomState instance or None, default=None
            Seeds the sampled counts.

        Returns
        -------
        AnnData
            One row per query cell (obs copied), var = training genes, dense
            non-negative log1p ``X``.
        """
        check_is_fitted(self)
        check_params(self)
        adata = self._query_data(adata)
        info, _, X = self._read_input(adata, training=False)
        types = info.cell_types if info.cell_types is not None else np.full(adata.n_obs, _ALL)
        unseen = sorted(set(types[~info.is_control].tolist()) - set(self.control_profiles_.index))
        # a cell type never fitted: its query cells (its controls) give its control
        # profile, unless the caller gives the mean of all of them (chunked calls)
        new_ctrl = {}
        for ct in unseen:
            given = given_basal(ct, X.shape[1])
            if given is None:
                given = np.asarray(X[types == ct].mean(0)).ravel()
            new_ctrl[ct] = given
        warn_unseen(
            unseen,
            fitted=self.control_profiles_.index,
            cell_type_key=self.cell_type_key,
            model=type(self).__name__,
            action=self._unseen_action,
            stacklevel=2,
        )
        out = np.empty((adata.n_obs, len(self.feature_names_in_)))
        ctrl_rows = np.flatnonzero(info.is_control)
        ctrl = X[ctrl_rows]
        out[ctrl_rows] = ctrl.toarray() if sp.issparse(ctrl) else ctrl
        pert_rows = np.flatnonzero(~info.is_control)
        frame = pd.DataFrame({"p": info.labels[pert_rows], "ct": types[pert_rows]})
        for (label, ct), idx in frame.groupby(["p", "ct"], sort=False).indices.items():
            rows = pert_rows[idx]
            if ct in new_ctrl:
                profile = new_ctrl[ct] + self._unseen_delta(label)
            else:
                profile = self._profile(label, ct)
            if self.cells == "profile":
                out[rows] = profile
            else:
                out[rows] = _carry_cells(X[rows], profile, self.nonzero_level_)
        np.clip(out, 0.0, None, out=out)
        return self._output(out, adata, output, all_genes, random_state)

    def _query_data(self, adata):
        """The query prepared once (``_read_input`` and the counts output pass it through)."""
        return prepare(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            require_control=False,
        )

    def predict_perturbations(self, controls, perturbations=None, **kwargs):
        """Predict ``perturbations`` from the control cells of ``controls`` (AnnData out).

        See :func:`sktx.predict_perturbations` (``n_cells=``, ``with_controls=``, ...).
        """
        from sktx._perturbations import predict_perturbations

        return predict_perturbations(self, controls, perturbations, **kwargs)

    def _output(self, X: np.ndarray, query, output="log1p", all_genes=False, random_state=None):
        """The prediction as AnnData: the query's obs, the training genes as var."""
        import anndata as ad

        var = pd.DataFrame(index=pd.Index(self.feature_names_in_))
        pred = ad.AnnData(X, obs=query.obs.copy(), var=var)
        return prediction_output(
            pred, query, output=output, all_genes=all_genes, random_state=random_state
        )

    def __sklearn_tags__(self):
        # multi-output regressors of AnnData: no y is needed, the targets are the cells
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True  # CSR `X` is read as is
        tags.input_tags.positive_only = True  # counts or log1p; negatives are rejected
        return tags

    def score(self, adata, y=None) -> float:
        return delta_mse_score(self, self._read_input(adata, training=True).data)

    score.__doc__ = SCORE_DOC


def _carry_cells(cells, profile: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Query cells carried to mean ``profile`` with the regressor's zero-preserving map."""
    import torch

    from sktx.nn import predict_cells

    x = torch.as_tensor(cells.toarray() if sp.issparse(cells) else np.asarray(cells))[None]
    x = x.double()
    basal = x.mean(1)
    d = torch.as_tensor(profile, dtype=torch.float64)[None] - basal
    lvl = torch.as_tensor(level, dtype=torch.float64)
    return predict_cells(x, basal, d, torch.zeros_like(basal), lvl)[0].numpy()
