"""Honest baselines with the sktx estimator API: the bar a perturbation model must clear.

All baselines ``fit(adata)`` on cells with ``obs[perturbation_key]`` (counts or
log1p; counts are log1p-normalised first) and ``predict(query)`` one profile
per query cell: query cells labelled with a perturbation get that
perturbation's predicted log1p profile (the same for every cell of one
perturbation and cell type; ``cells="profile"``, cell-eval's convention) or,
with ``cells="controls"``, the query's own control cells carried to that
profile's mean the way :class:`~sktx.regressor.PerturbationRegressor` does it
(zeros stay zero, non-zero values are scaled); query cells labelled as control
are returned as they are. Outputs are non-negative log1p AnnData with the query's obs and the
training genes as var (build queries with :func:`sktx.model_selection.make_query`).

:data:`BASELINES` names each baseline as the command line and the reports do. A
new baseline is one module (a subclass of ``_Baseline`` from ``_base.py``
implementing ``_fit`` and ``_delta``) plus one entry in :data:`BASELINES`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sklearn.base import BaseEstimator

from sktx.baselines._additive import AdditiveBaseline
from sktx.baselines._control import ControlBaseline
from sktx.baselines._knn import KNNBaseline
from sktx.baselines._linear import LinearBaseline
from sktx.baselines._mean import MeanBaseline

__all__ = [
    "BASELINES",
    "AdditiveBaseline",
    "ControlBaseline",
    "KNNBaseline",
    "LinearBaseline",
    "MeanBaseline",
]

#: Baseline name (as in ``sktx demo``'s report and metrics tables) -> factory. Each
#: factory takes the estimator's keyword parameters, e.g.
#: ``BASELINES["additive_joint"](perturbation_key="perturbation")``.
BASELINES: dict[str, Callable[..., BaseEstimator]] = {
    "control": ControlBaseline,
    "mean": MeanBaseline,
    "additive": AdditiveBaseline,
    # target effects fitted on singles and combinations: what the regressor starts from
    "additive_joint": partial(AdditiveBaseline, effects="joint"),
    "linear": LinearBaseline,
    # unseen targets from the effects of similar fitted ones (gene sets, co-expression)
    "knn": KNNBaseline,
}
