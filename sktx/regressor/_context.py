"""The regressor's zero-shot path: contexts (cell types) never seen in ``fit``.

Seen contexts never reach this module, so their predictions are those of a model
without it. For an unseen context the prediction starts from the mean of the
query's cells of that context (they are its control cells) and the baseline the
network adds its residual to is :func:`sktx.context.fit_context_transfer` of the
fitted deltas instead of a within-context target-effect fit.
"""

from __future__ import annotations

import numpy as np

from sktx.context import ContextTransfer, fit_context_transfer

__all__ = ["ACTION", "context_means", "transfer", "unseen_contexts"]

#: What the warning says the regressor does for an unseen context.
ACTION = (
    "each perturbation starts from the mean of the query's cells of that cell type (its "
    "controls) plus the perturbation's effect in the fitted cell types, its mean-response "
    "and specific parts shrunk by leave-one-cell-type-out fits, plus the learned residual"
)


def unseen_contexts(cts: np.ndarray, is_control: np.ndarray, state) -> list[str]:
    """Contexts of perturbed query cells with no fitted controls."""
    return sorted(set(cts[~is_control].tolist()) - set(state.cell_types))


def context_means(Xq, groups, names) -> dict:
    """Mean of every query row of each context in ``names`` (controls and relabelled)."""
    out = {}
    for ct in names:
        parts = [rows for rows, c in zip(groups.rows, groups.cell_types, strict=True) if c == ct]
        parts.append(groups.control_rows.get(ct, np.empty(0, dtype=int)))
        rows = np.concatenate(parts)
        out[ct] = np.asarray(Xq[rows].mean(0)).ravel().astype(np.float32)
    return out


def transfer(model, state) -> ContextTransfer:
    """The fitted state's :class:`~sktx.context.ContextTransfer`, memoised on the model."""
    memo = getattr(model, "_transfer_memo", None)
    if memo is not None and memo[0] is state:
        return memo[1]
    controls = dict(zip(state.cell_types, state.ctrl_means, strict=True))
    out = fit_context_transfer(
        state.deltas,
        list(state.delta_labels),
        list(state.delta_cts),
        controls,
        control_label=model.control_label,
    )
    model._transfer_memo = (state, out)
    return out
