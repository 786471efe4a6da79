"""Per-epoch history of any fitted sktx model (net, Pipeline or ProgressiveFit) as a table."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["final_net", "training_history"]


def final_net(estimator):
    """The skorch net inside a Pipeline / ProgressiveFit (or the estimator itself)."""
    est = getattr(estimator, "estimator_", estimator)
    if hasattr(est, "steps"):
        est = est.steps[-1][1]
    return est


def training_history(estimator) -> pd.DataFrame | None:
    """One row per epoch: ``phase``, ``n_genes``, ``epoch``, ``train_loss``, ``valid_loss``, ...

    Parameters
    ----------
    estimator : fitted estimator
        A :class:`~sktx.PerturbationRegressor`, a ``Pipeline`` ending in one, or a
        :class:`~sktx.ProgressiveFit` (the phases number the rows).

    Returns
    -------
    DataFrame or None
        None for models without a training history (the baselines).

    Examples
    --------
    >>> from sktx.baselines import MeanBaseline
    >>> training_history(MeanBaseline()) is None
    True
    """
    from sktx.report import history_frame, phase_history_frame

    net = final_net(estimator)
    phases = getattr(estimator, "phase_history_", None)
    if phases:
        # The same net is warm-started through the phases: its history holds every epoch
        # with throughput and memory; the phase records say which epochs belong where.
        epochs = [int(p.get("epochs", 0)) for p in phases]
        if getattr(net, "history", None) is not None and len(net.history) == sum(epochs):
            frame = history_frame(net)
            frame["phase"] = np.repeat(np.arange(1, len(phases) + 1), epochs)
            frame["n_genes"] = np.repeat([p.get("n_genes") for p in phases], epochs)
            return frame
        return phase_history_frame(phases)
    if getattr(net, "history", None) is None:
        return None
    est = getattr(estimator, "estimator_", estimator)
    select = est.steps[0][1] if hasattr(est, "steps") else None
    n_genes = len(getattr(select, "selected_genes_", [])) or None
    return history_frame(net, n_genes=n_genes)
