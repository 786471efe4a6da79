"""Cross-fitting: networks trained on folds of the training perturbations, and the residual scale.

With ``crossfit=k`` the fitted perturbations are split into ``k`` folds;
network ``j`` trains on the other folds, early-stops on fold ``j`` and is
scored on it. Every fitted perturbation is thus out-of-fold for exactly one
network, and the residual scale is fitted by least squares on all of them
(not on the ~3 perturbations of a 10 % validation split), each a whole
pseudobulk predicted from the fitted control mean, as at prediction.

Predictions average the ``k`` networks' residuals. If the networks' errors
were independent, the average's error would have ``1 / k`` of one network's
variance, so the least-squares factor of the average is ``s / (s + (1 - s) / k)``
for a single network's factor ``s`` (:func:`ensemble_scale`). The networks
share training perturbations, so their errors are correlated and the
correction is an upper bound. On two simulator folds (tuning data) it raised
the held-out VCC score and DES over the single network's factor (docs/model.md).
"""

from __future__ import annotations

import numpy as np
import torch

from sktx.data import SetSampler
from sktx.regressor._training import _Sets

__all__ = [
    "CrossfitMixin",
    "crossfit_folds",
    "ensemble_scale",
    "gene_residual_scale",
    "residual_scale",
    "residual_sums",
]


def crossfit_folds(perturbations, k: int, rng) -> list[set]:
    """Split ``perturbations`` into ``k`` folds of sizes differing by at most one.

    Examples
    --------
    >>> import numpy as np
    >>> folds = crossfit_folds(list("abcde"), 2, np.random.RandomState(0))
    >>> sorted(len(f) for f in folds), set().union(*folds) == set("abcde")
    ([2, 3], True)
    """
    order = rng.permutation(sorted(perturbations)).tolist()
    return [set(order[j::k]) for j in range(k)]


def residual_sums(net, groups, group_ids, batch_size: int = 64) -> np.ndarray:
    """Per gene, ``[r * (t - b), r * r]`` summed over groups: shape (2, genes).

    For each (perturbation, cell type) group of ``groups`` in ``group_ids``:
    ``t`` is its whole pseudobulk delta over the fitted controls, ``b`` its
    training baseline (the leave-one-out start) and ``r`` the network's
    residual over ``b`` from the fitted control mean, as at prediction.

    Not the 64-cell training sets: there the target is a set of perturbed
    cells minus a set of control cells the network sees as its input, so a
    residual that undoes the control set's sampling noise looks useful, and
    it is worth nothing at prediction, where the basal is a whole control
    mean. On Datlinger 2017 the set-based factor was 0.87-0.95 and the trained
    model lost MAE and PDS to its start on held-out perturbations; on whole
    pseudobulks it is 0-0.15.
    """
    module, state = net._bare_module, net._state
    module.eval()
    ct_row = {c: i for i, c in enumerate(state.cell_types)}
    sums = torch.zeros(2, len(state.genes), dtype=torch.float64, device=net._device())
    ids = list(group_ids)
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            basal = state.ctrl_means[[ct_row[groups.cell_types[g]] for g in chunk]]
            Xi = net._module_inputs([net._group_inputs_[g] for g in chunk], basal, state)
            with net._autocast():
                d, _ = module(**Xi)
            r = d.float() - Xi["baseline"]
            miss = torch.as_tensor(state.deltas[chunk], device=r.device) - Xi["baseline"]
            sums += torch.stack([(r * miss).sum(0), (r * r).sum(0)]).double()
    return sums.cpu().numpy()


def ensemble_scale(scale, n_networks: int):
    """The factor of the mean of ``n_networks`` residuals from one network's factor ``s``.

    ``s / (s + (1 - s) / n)``: with a network's residual = signal + error
    (``s`` = signal / (signal + error) in squared norm), the mean of ``n``
    independent errors has ``1 / n`` of the variance. 0 stays 0, 1 stays 1.

    Examples
    --------
    >>> ensemble_scale(0.5, 3), ensemble_scale(0.0, 3), ensemble_scale(1.0, 3)
    (0.75, 0.0, 1.0)
    """
    s = np.asarray(scale, dtype=np.float64)
    den = s + (1.0 - s) / max(int(n_networks), 1)
    out = np.divide(s, den, out=np.zeros_like(s), where=den > 0)
    return float(out) if out.ndim == 0 else out.astype(np.float32)


def residual_scale(sums, empty: float = 1.0) -> float:
    """Least-squares factor ``<r, t - b> / <r, r>`` in [0, 1]; ``empty`` without a residual.

    Examples
    --------
    >>> residual_scale([2.0, 4.0]), residual_scale([-1.0, 4.0]), residual_scale([0.0, 0.0])
    (0.5, 0.0, 1.0)
    """
    num, den = (float(np.sum(v)) for v in sums)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else float(empty)


def gene_residual_scale(sums, prior: float | None = None) -> np.ndarray:
    """Per-gene least-squares factors, shrunk towards the global one, clipped to [0, 1].

    ``(num_g + w * a) / (den_g + w)`` with ``a`` the global factor
    (:func:`residual_scale`) and ``w`` the prior weight, by default the mean
    ``den_g``: a gene whose residual carries as much evidence as an average
    gene is halfway between its own factor and the global one; a gene the
    network barely touches keeps the global factor.

    Examples
    --------
    >>> import numpy as np
    >>> sums = np.array([[4.0, -1.0, 0.0], [4.0, 1.0, 1.0]])  # num, den per gene
    >>> [round(float(v), 3) for v in gene_residual_scale(sums)]  # global factor 3 / 6 = 0.5
    [0.833, 0.0, 0.333]
    """
    num, den = np.asarray(sums, dtype=np.float64)
    a = residual_scale(sums)
    w = float(den.mean()) if prior is None else float(prior)
    if w <= 0:
        return np.full(num.shape, a, dtype=np.float32)
    return np.clip((num + w * a) / (den + w), 0.0, 1.0).astype(np.float32)


class CrossfitMixin:
    """Training and prediction of the cross-fitted networks of a regressor."""

    def _fit_residual_scale(self, valid) -> float:
        """Least-squares factor in [0, 1] of a single network's residual on its validation sets.

        The network's residual over the baseline generalises only partly to
        perturbations it has not seen; scaling it by the factor fitted on the
        held-out validation perturbations keeps the part that does. Without a
        validation split the residual is kept as is (1.0). Validation groups
        are not sharded: every process gets the same factor.
        """
        if valid is None or not len(self.history):
            return 1.0
        return residual_scale(residual_sums(self, valid.groups, valid.group_ids))

    def _fit_members(self, X, groups, folds, sampler, rng, previous, fit_params) -> float:
        """Train one network per fold (held out for its early stopping); return the scale.

        Every network starts from the weights this fit starts from (its own
        previous weights in a warm fit with as many networks) with fresh
        optimizer moments; the residual sums of each on its own held-out fold
        are pooled into one least-squares scale, corrected for the average of the
        networks (:func:`ensemble_scale`).
        """
        module = self._bare_module
        old_members = previous.members if previous is not None else []
        resumed = len(old_members) == len(folds)
        start = _weights(module)
        sums, members, trained = 0.0, [], False
        for j, fold in enumerate(folds):
            _load(module, old_members[j] if resumed else start)
            optimizer = getattr(self.optimizer_, "optimizer", self.optimizer_)
            optimizer.state.clear()  # moments belong to the previous network
            train_ids = [i for i, lab in enumerate(groups.labels) if lab not in fold]
            valid_ids = [i for i, lab in enumerate(groups.labels) if lab in fold]
            train = SetSampler(X, groups, train_ids, rng=rng, **sampler)
            vrng = np.random.RandomState(rng.randint(2**31 - 1))
            valid = SetSampler(
                X, groups, valid_ids, rng=vrng, fixed=True, **{**sampler, "shard": (0, 1)}
            )
            n_before = len(self.history)
            self.partial_fit(_Sets(train, valid), **fit_params)
            for row in list(self.history)[n_before:]:
                row["member"] = j
            if len(self.history) > n_before:
                trained = True
                sums += residual_sums(self, groups, valid_ids)
            members.append(_weights(module))
        if not trained:
            # nothing learnt in this call: a resumed ensemble keeps its networks and
            # scale; a fresh one is the baseline, which one network predicts as well
            self.fitted_state_.members = members if resumed else []
            self.fitted_state_.gene_scale = previous.gene_scale if resumed else None
            return previous.residual_scale if resumed else 1.0
        self.fitted_state_.members = members
        n = len(members)
        self.fitted_state_.gene_scale = ensemble_scale(gene_residual_scale(sums), n)
        return ensemble_scale(residual_scale(sums), n)

    def _predict_delta(self, group_keys, basal, state):
        """The single network's prediction, or the mean over the cross-fitted networks.

        With ``residual_shrinkage="gene"`` (and per-gene factors fitted) each
        gene's residual is scaled by its own factor instead of the global one.
        """
        per_gene = self.residual_shrinkage == "gene" and state.gene_scale is not None
        if len(state.members) < 2 and not per_gene:
            return super()._predict_delta(group_keys, basal, state)
        saved = state.residual_scale
        if per_gene:
            state.residual_scale = 1.0  # the raw mean residual; scaled per gene below
        try:
            if len(state.members) < 2:
                deltas, scales = super()._predict_delta(group_keys, basal, state)
            else:
                module = self._bare_module
                deltas, scales = 0.0, 0.0
                # in fit order: the module ends holding the last network, as after `fit`
                for weights in state.members:
                    _load(module, weights)
                    d, ls = super()._predict_delta(group_keys, basal, state)
                    deltas, scales = deltas + d, scales + ls
                deltas, scales = deltas / len(state.members), scales / len(state.members)
        finally:
            state.residual_scale = saved
        if per_gene:
            base = np.stack([self._baseline(lab, ct, state, loo=False) for lab, ct in group_keys])
            deltas = base + state.gene_scale * (deltas - base)
        return deltas, scales


def _weights(module) -> dict:
    """A copy of the module's tensors (its extra state, the saved-model slot, is left out)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if torch.is_tensor(v)}


def _load(module, weights: dict) -> None:
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("_extra_state")]:
        raise ValueError(
            f"cross-fitted weights do not match the module (missing {missing}, unexpected "
            f"{unexpected}); refit the model."
        )
