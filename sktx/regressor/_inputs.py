"""From a fitted state to the module's inputs: baselines, target masks, features."""

from __future__ import annotations

import numpy as np
import torch

from sktx._effects import fit_by_cell_type
from sktx.data import split_targets
from sktx.graph import hash_genes
from sktx.regressor._start import TargetSimilarity, fit_start
from sktx.regressor._state import N_FEATURES, gene_features

__all__ = ["InputsMixin"]


#: ``start`` -> how :func:`fit_start` fits ``alpha`` and ``c``
_START = {"shrunk": {}, "knn": {"knn": 1.0, "shrink": False}}


class InputsMixin:
    """Builds the tensors a :class:`~sktx.nn.GeneTokenModel` takes for groups of cells."""

    def _effects(self, state) -> dict:
        """The start per cell type (``None`` key: all cell types pooled), memoised.

        ``{cell type: Start}`` (:mod:`sktx.regressor._start`): joint additive
        effects, unseen targets from similar fitted ones, both fitted on the
        state's deltas (so a loaded or unpickled model rebuilds the same start).
        """
        memo = getattr(self, "_effects_memo", None)
        if memo is not None and memo[0] is state:
            return memo[1]
        fits = fit_by_cell_type(
            state.deltas,
            list(state.delta_labels),
            list(state.delta_cts),
            self.control_label,
            pooled=True,
        )
        # the membership stored at fit time (models saved before it was stored: the files)
        coexpr = None if state.coexpr is None else (state.coexpr_targets, state.coexpr)
        similarity = TargetSimilarity(
            self.gene_sets,
            state.genes,
            state.pca,
            membership=state.membership(),
            coexpression=coexpr,
        )
        cts = np.asarray(state.delta_cts, dtype=object)
        out = {}
        for ct, (fx, rows) in fits.items():
            if ct is None and len(fits) == 2:
                out[None] = out[next(c for c in fits if c is not None)]
                continue
            ct_rows = np.arange(len(cts)) if ct is None else np.flatnonzero(cts == ct)
            labels = [state.delta_labels[j] for j in ct_rows]
            out[ct] = fit_start(
                fx,
                rows,
                state.deltas[ct_rows],
                self.control_label,
                similarity,
                labels=labels,
                **_START[state.start],  # the start the residual was trained on
            )
        self._effects_memo = (state, out)
        return out

    def _baseline(self, label: str, ct: str, state, *, loo: bool = True) -> np.ndarray:
        """What the residual is added to: the start (:mod:`sktx.regressor._start`).

        Per-target effects are fitted jointly on the pseudobulk deltas of every
        fitted single and combination (:func:`sktx._effects.fit_target_effects`),
        so a target seen only inside combinations still gets an effect; a target
        never fitted gets the typical effect moved towards its most similar
        fitted targets and shrunk, by factors fitted leave-one-out. A label
        fitted in cell type ``ct`` gets, with ``loo`` (training inputs), its
        leave-one-label-out start (its own delta never enters its baseline, so
        training learns what the start misses on unseen perturbations) and,
        without it (prediction), its own fitted pseudobulk delta, as every
        baseline predicts a fitted perturbation. An unseen cell type uses all
        cell types pooled.
        """
        effects = self._effects(state)
        start = effects.get(ct, effects[None])
        if label in start.rows:
            if loo:
                return start.loo[start.rows[label]].astype(np.float32)
            if self._is_fitted(label, ct, state):
                return start.observed[start.rows[label]].astype(np.float32)
        targets = split_targets(label, self.control_label) or [label]
        return start.predict(targets).astype(np.float32)

    def _is_fitted(self, label: str, ct: str, state) -> bool:
        """Whether ``label`` was fitted in the (fitted) cell type ``ct``."""
        start = self._effects(state).get(ct) if ct in state.cell_types else None
        return start is not None and label in start.rows

    def _group_inputs(self, label: str, ct: str, state, *, loo: bool = True) -> dict:
        targets = split_targets(label, self.control_label) or [label]
        mask = np.zeros(len(state.genes), dtype=np.float32)
        for t in targets:
            g = state.gene_row.get(t)
            if g is not None:
                mask[g] = 1.0
        return {
            "baseline": self._baseline(label, ct, state, loo=loo),
            "target_mask": mask,
            "pert_hash": hash_genes(targets),
            "pert_feat": gene_features(targets, state),
        }

    def _module_inputs(self, group_inputs: list[dict], basal: np.ndarray, state) -> dict:
        T = max(len(g["pert_hash"]) for g in group_inputs)
        B = len(group_inputs)
        pert_hash = np.zeros((B, T, state.gene_hash.shape[1]), dtype=np.int64)
        pert_feat = np.zeros((B, T, N_FEATURES), dtype=np.float32)
        pert_mask = np.zeros((B, T), dtype=np.float32)
        for b, g in enumerate(group_inputs):
            n = len(g["pert_hash"])
            pert_hash[b, :n] = g["pert_hash"]
            pert_feat[b, :n] = g["pert_feat"]
            pert_mask[b, :n] = 1.0
        dev = self._device()
        t = self._gene_tensors_
        tokens = {} if t["tokens"] is None else {"tokens": t["tokens"]}  # skorch: no None values
        return {
            **tokens,
            "gene_hash": t["gene_hash"],
            "gene_feat": t["gene_feat"],
            "neighbors": t["neighbors"],
            "basal": torch.as_tensor(basal, device=dev),
            "baseline": torch.as_tensor(
                np.stack([g["baseline"] for g in group_inputs]), device=dev
            ),
            "target_mask": torch.as_tensor(
                np.stack([g["target_mask"] for g in group_inputs]), device=dev
            ),
            "pert_hash": torch.as_tensor(pert_hash, device=dev),
            "pert_feat": torch.as_tensor(pert_feat, device=dev),
            "pert_mask": torch.as_tensor(pert_mask, device=dev),
        }

    def _set_gene_tensors_(self, state):
        dev = self._device()
        tokens = getattr(state, "tokens", None)
        self._gene_tensors_ = {
            "gene_hash": torch.as_tensor(state.gene_hash, device=dev),
            "gene_feat": torch.as_tensor(state.gene_feat, device=dev),
            "neighbors": torch.as_tensor(state.neighbors, device=dev),
            "tokens": None if tokens is None else torch.as_tensor(tokens, device=dev),
            # for predict_cells in the distributional loss (not a module input)
            "nonzero_level": torch.as_tensor(state.nonzero_level, device=dev),
        }

    @property
    def _state(self):
        """The fitted state; gene tensors placed on the device on first use."""
        state = getattr(self, "fitted_state_", None)
        if state is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This PerturbationRegressor is not fitted yet; call `fit(adata)` first."
            )
        if getattr(self, "_gene_tensors_", None) is None or len(
            self._gene_tensors_["gene_hash"]
        ) != len(state.genes):
            self._set_gene_tensors_(state)
        return state
