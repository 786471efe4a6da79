"""Prediction from query cells: cells, pseudobulk deltas and the estimator's score."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch

from sktx._counts import prediction_output
from sktx._scoring import SCORE_DOC, delta_mse_score
from sktx.context import given_basal, warn_unseen
from sktx.data import BackedRows, CellGroups, DataContractError, split_targets
from sktx.nn import predict_cells
from sktx.regressor._context import ACTION, context_means, transfer, unseen_contexts
from sktx.regressor._training import _threads

__all__ = ["PredictMixin"]


class PredictMixin:
    """``predict``, ``predict_deltas`` and ``score`` of :class:`~sktx.PerturbationRegressor`."""

    def _query(self, adata):
        self._check_params()
        state = self._state
        genes = state.genes
        present = set(adata.var_names)
        missing = [g for g in genes if g not in present]
        if missing:
            raise DataContractError(
                f"{len(missing)} of the {len(genes)} genes the model was fitted on are not in "
                f"`var_names` (e.g. {missing[:5]}). Pass data with the same genes (the "
                "`GeneSelector` of the same pipeline selects them)."
            )
        data = self._prepare(adata, require_control=False)
        X = data.X32
        if isinstance(X, BackedRows):
            X = X.to_csr()  # predictions are dense anyway
        X = X[:, data.genes.get_indexer(genes)]
        labels, is_control, cts = data.labels, data.is_control, data.contexts
        known = set(genes) | set(state.prior_row) | set(state.train_targets)
        unknown = sorted(
            {
                t
                for lab in set(labels[~is_control].tolist())
                for t in split_targets(lab, self.control_label)
                if t not in known and t.upper() not in state.prior_row
            }
        )
        if unknown:
            msg = (
                f"no embedding for target gene(s) {unknown} in `obs[{self.perturbation_key!r}]`: "
                "they are not among the fitted genes, not in the prior gene sets and were not "
                "perturbed in training. Pass `gene_sets=` (e.g. a GO BP GMT) covering them, "
                "check the spelling, or set `on_unknown_target='warn'`."
            )
            if self.on_unknown_target != "warn":
                raise DataContractError(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)
        warn_unseen(
            unseen_contexts(cts, is_control, state),
            fitted=state.cell_types,
            cell_type_key=self.cell_type_key,
            model=type(self).__name__,
            action=ACTION,
            stacklevel=3,
        )
        return X, labels, is_control, cts, state

    def _predict_delta(self, group_keys, basal, state):
        """Predicted (delta, log_scale) for groups given their basal means.

        A perturbation fitted in its cell type is predicted as its own fitted
        pseudobulk delta, without a residual (as every baseline predicts it): the
        networks learnt to correct the start of perturbations they had not seen
        (their training baselines are leave-one-label-out).
        """
        module = self._bare_module
        module.eval()
        deltas, scales = [], []
        with torch.no_grad(), _threads(self.n_jobs):
            for s in range(0, len(group_keys), self.batch_size):
                keys = group_keys[s : s + self.batch_size]
                inputs = [self._group_inputs(lab, ct, state, loo=False) for lab, ct in keys]
                for i, (lab, ct) in enumerate(keys):
                    if ct not in state.cell_types:  # zero-shot: effects of the fitted contexts
                        tr = transfer(self, state).predict(lab, basal[s + i])
                        inputs[i]["baseline"] = tr.astype(np.float32)
                Xi = self._module_inputs(inputs, basal[s : s + self.batch_size], state)
                with self._autocast():
                    d, ls = module(**Xi)
                # shrink the learned residual by the factor fitted out of fold; none for
                # a fitted perturbation
                alpha = torch.tensor(
                    [0.0 if self._is_fitted(lab, ct, state) else state.residual_scale
                     for lab, ct in keys],
                    dtype=torch.float32, device=d.device,
                )[:, None]  # fmt: skip
                d = Xi["baseline"] + alpha * (d.float() - Xi["baseline"])
                deltas.append(d.float().cpu().numpy())
                scales.append(ls.float().cpu().numpy())
        return np.concatenate(deltas), np.concatenate(scales)

    def predict(self, X, *, output="log1p", all_genes=False, random_state=None):
        """Simulate perturbed cells from control cells.

        Parameters
        ----------
        X : AnnData
            Query cells: control cells whose ``obs[perturbation_key]`` names the
            perturbation to simulate (cells labelled ``control_label`` are
            returned unchanged). Counts or log1p; must contain the fitted genes.
        output : {"log1p", "counts"}, default="log1p"
            ``"counts"``: raw integer counts (CSR) sampled from a negative binomial
            whose normalised mean is the log1p prediction, at each query cell's
            library size (needs the query's counts; see :mod:`sktx._counts`).
        all_genes : bool, default=False
            Return the query's whole gene axis; genes outside ``genes_`` keep the
            query cells' own values.
        random_state : int, RandomState instance or None, default=None
            Seeds the sampled counts; None uses the estimator's ``random_state``.

        Returns
        -------
        AnnData
            Same ``obs`` (copied), ``var`` = ``genes_``, ``X`` dense float32
            log1p predictions (non-negative); ``uns['log1p']`` is set.
        """
        self._state  # noqa: B018 (NotFittedError before the input is read)
        X = self._prepare(X, require_control=False)  # once: `_query` passes it through
        Xq, labels, is_control, cts, state = self._query(X)
        groups = CellGroups.from_labels(labels, is_control, cts)
        out = Xq.toarray()
        predicted = self._predict_groups(Xq, groups, state)
        for rows, (cells, _) in zip(groups.rows, predicted, strict=True):
            out[rows] = cells
        result = ad.AnnData(
            X=out.astype(np.float32),
            obs=X.obs.copy(),
            var=pd.DataFrame(index=pd.Index(state.genes, name=X.var_names.name)),
        )
        result.uns["log1p"] = {"base": None}
        seed = self.random_state if random_state is None else random_state
        return prediction_output(result, X, output=output, all_genes=all_genes, random_state=seed)

    def predict_deltas(self, adata) -> pd.DataFrame:
        """Predicted pseudobulk delta per perturbation group, vs the control mean it starts from.

        Parameters
        ----------
        adata : AnnData
            Query cells as for :meth:`predict`.

        Returns
        -------
        DataFrame
            Rows ``"label"`` (or ``"label|cell_type"`` with a cell-type key), columns genes.
        """
        Xq, labels, is_control, cts, state = self._query(adata)
        groups = CellGroups.from_labels(labels, is_control, cts)
        return self._group_deltas(Xq, groups, state)

    def _predict_groups(self, Xq, groups, state):
        """Yield (predicted cells, basal) per group of query rows.

        ``basal`` is the control mean the prediction is anchored to: the fitted
        control mean of the group's cell type (``basal="fitted"``; for a cell
        type not seen in fit, the mean of all query cells of that cell type) or
        the query rows' mean.
        """
        if not groups.labels:
            return
        query_mean = _row_means(Xq, groups.rows)
        basal = query_mean.copy()
        if self.basal == "fitted":
            # the fitted controls' mean is exact; a query drawn from them (with
            # replacement when there are more perturbed cells than controls)
            # only estimates it, and that noise went straight into the MAE
            seen = {ct: i for i, ct in enumerate(state.cell_types)}
            for j, ct in enumerate(groups.cell_types):
                if ct in seen:
                    basal[j] = state.ctrl_means[seen[ct]]
            # an unseen cell type: all its query cells (its controls) estimate its mean,
            # unless the caller gives the mean of all of them (chunked calls)
            unseen = set(groups.cell_types) - set(seen)
            given = {ct: given_basal(ct, Xq.shape[1]) for ct in unseen}
            new = {ct: v for ct, v in given.items() if v is not None}
            new.update(context_means(Xq, groups, unseen - set(new)))
            for j, ct in enumerate(groups.cell_types):
                if ct in new:
                    basal[j] = new[ct]
        keys = list(zip(groups.labels, groups.cell_types, strict=True))
        delta, log_scale = self._predict_delta(keys, basal, state)
        for j, rows in enumerate(groups.rows):
            cells = torch.as_tensor(Xq[rows].toarray()[None])
            pred = predict_cells(
                cells,
                torch.as_tensor(query_mean[j : j + 1]),
                torch.as_tensor(basal[j : j + 1] - query_mean[j : j + 1] + delta[j : j + 1]),
                torch.as_tensor(log_scale[j : j + 1]),
                torch.as_tensor(state.nonzero_level),
            )
            yield pred[0].numpy(), basal[j]

    def _group_deltas(self, Xq, groups, state) -> pd.DataFrame:
        rows = [cells.mean(0) - basal for cells, basal in self._predict_groups(Xq, groups, state)]
        keys = zip(groups.labels, groups.cell_types, strict=True)
        index = [lab if self.cell_type_key is None else f"{lab}|{ct}" for lab, ct in keys]
        return pd.DataFrame(np.array(rows), index=index, columns=state.genes)

    def score(self, X, y=None) -> float:
        return delta_mse_score(self, self._prepare(X, require_control=True))

    score.__doc__ = SCORE_DOC


def _row_means(X, rows_list) -> np.ndarray:
    """Mean of ``X[rows]`` for each (possibly overlapping) list of rows."""
    return np.stack([np.asarray(X[rows].mean(0)).ravel() for rows in rows_list]).astype(np.float32)
