"""scikit-learn scorers: predict held-out perturbations from controls, then score."""

from __future__ import annotations

import ast
import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.metrics._input import DataContractError, matrix, prepare_input
from sktx.metrics._registry import available_metrics, get_metric
from sktx.metrics._scores import build_mean_baseline, vcc_score
from sktx.metrics._table import Reference

__all__ = [
    "FallbackWarning",
    "PerturbationScorer",
    "des_scorer",
    "get_scorer",
    "mae_scorer",
    "pds_scorer",
    "pearson_delta_scorer",
    "top_de_mse_scorer",
    "vcc_scorer",
]

# The regressor's warning for targets it has no embedding for (on_unknown_target="warn").
_NO_EMBEDDING = re.compile(r"no embedding for target gene\(s\) (\[[^\]]*\])")


class FallbackWarning(UserWarning):
    """Scored perturbations the model could not embed and predicted by its fallback."""


_DEFAULTS = {
    "perturbation_key": "target_gene",
    "control_label": "non-targeting",
    "cell_type_key": None,
}


def _from_estimator(estimator, name: str):
    """``name`` as set on the estimator or any step of it (``model__perturbation_key``)."""
    try:
        params = estimator.get_params(deep=True)
    except (AttributeError, TypeError):
        return _DEFAULTS[name]
    if name in params:
        return params[name]
    hits = [v for k, v in params.items() if k.endswith(f"__{name}")]
    return hits[-1] if hits else _DEFAULTS[name]


class PerturbationScorer:
    """Score an estimator on the perturbations of a test split.

    Called as ``scorer(estimator, adata)`` (what ``GridSearchCV(scoring=...)``
    and ``cross_validate`` do), it builds the query with
    :func:`sktx.model_selection.make_query` — the test split's control cells
    relabelled with each held-out perturbation, one query cell per real
    perturbed cell, drawn from the controls of the same cell type — calls
    ``estimator.predict(query)``, appends the real control cells to the
    prediction and compares it with the real perturbed cells.

    Parameters
    ----------
    metric : {"des", "pds", "mae", "pearson_delta", "top_de_mse", "vcc"} or str
        What to compute (see :mod:`sktx.metrics`): a registered metric
        (:func:`~sktx.metrics.available_metrics`) or ``"vcc"``, the overall
        score scaled against the cell-mean baseline of the test split.
    greater_is_better : bool, default=True
        If False the value is negated (scikit-learn maximises scores).
    perturbation_key, control_label, cell_type_key : str, optional
        Default: read from the estimator (or a step of a pipeline) when it has
        such a parameter, else ``"target_gene"``, ``"non-targeting"``, None.
    random_state : int, default=0
        Which control cells make the query.

    Attributes
    ----------
    fallbacks_ : list of dict
        One record per call (in this process): ``estimator``,
        ``n_perturbations`` scored, ``n_fallback`` of them predicted by the
        model's fallback because a target gene has no embedding (named in
        ``fallback_perturbations`` and ``unknown_targets``). A
        :class:`FallbackWarning` says the same when ``n_fallback > 0``.

    Notes
    -----
    Predictions are clipped at 0 before scoring (cell-eval rejects negative
    values). The real data are log1p-normalised first when they hold counts.
    When the estimator predicts a subset of genes (e.g. after a
    ``GeneSelector``), the real data are restricted to those genes, so scores
    of models using different gene sets are not strictly comparable.

    A perturbation whose target the model cannot embed (a
    :class:`~sktx.regressor.PerturbationRegressor` with
    ``on_unknown_target="warn"``, the default) is scored as the model predicts
    it without an embedding, never left out and never NaN, so every candidate
    of a grid is scored on the same perturbations; the count is in
    ``fallbacks_`` and in a :class:`FallbackWarning`.

    Examples
    --------
    >>> from sktx.baselines import MeanBaseline
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = MeanBaseline().fit(adata)
    >>> 0.0 <= PerturbationScorer("pds")(model, adata) <= 1.0
    True
    """

    def __init__(
        self,
        metric: str,
        *,
        greater_is_better: bool = True,
        perturbation_key: str | None = None,
        control_label: str | None = None,
        cell_type_key: str | None = None,
        random_state: int = 0,
    ) -> None:
        choices = [*available_metrics(), "vcc"]
        if metric not in choices:
            raise ValueError(f"unknown metric {metric!r}; choose from {choices}.")
        self.metric = metric
        # The entry travels with the scorer, so worker processes (n_jobs > 1) that never
        # ran the user's register_metric call still compute the metric.
        self._metric = None if metric == "vcc" else get_metric(metric)
        self.greater_is_better = greater_is_better
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.random_state = random_state
        self.fallbacks_: list[dict] = []

    def __repr__(self) -> str:
        sign = "" if self.greater_is_better else ", greater_is_better=False"
        return f"PerturbationScorer({self.metric!r}{sign})"

    def _keys(self, estimator) -> dict:
        keys = {}
        for name in _DEFAULTS:
            given = getattr(self, name)
            keys[name] = given if given is not None else _from_estimator(estimator, name)
        return keys

    def real_and_predicted(self, estimator, X):
        """The real cells of ``X`` and the estimator's prediction of them.

        Steps 1-2 of the scorer, exposed so the same pair can be scored with
        :func:`perturbation_metrics` or :func:`vcc_evaluate` (cell-eval).

        Parameters
        ----------
        estimator : fitted estimator
            Has ``predict(query) -> AnnData``.
        X : AnnData
            Control cells and the perturbed cells to predict.

        Returns
        -------
        real, pred : AnnData
            On the genes the estimator predicts; obs hold only the perturbation
            (and cell-type) column; ``pred`` = predicted perturbed cells + the
            real control cells.
        """
        real, pred, _ = self._real_and_pred(estimator, X)
        return real, pred

    def _predict(self, estimator, query, keys: dict):
        """``estimator.predict(query)``, counting perturbations scored as its fallback."""
        from sktx.data import split_targets

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = estimator.predict(query)
        unknown: set[str] = set()
        for w in caught:
            match = _NO_EMBEDDING.search(str(w.message))
            if match:
                unknown.update(ast.literal_eval(match.group(1)))
            else:  # not ours to swallow
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        perts = sorted(set(query.labels[~query.is_control].tolist()))
        fallback = [
            p for p in perts if unknown & set(split_targets(p, keys["control_label"]) or [p])
        ]
        record = {
            "estimator": type(estimator).__name__,
            "n_perturbations": len(perts),
            "n_fallback": len(fallback),
            "fallback_perturbations": fallback,
            "unknown_targets": sorted(unknown),
        }
        self.fallbacks_.append(record)
        if fallback:
            warnings.warn(
                f"{len(fallback)} of {len(perts)} scored perturbations ({', '.join(fallback[:8])}"
                f"{' ...' if len(fallback) > 8 else ''}) have target genes without an embedding "
                f"in {record['estimator']} ({', '.join(record['unknown_targets'][:8])}); they are "
                "scored as the model predicts them without one (its fallback: the baseline plus "
                "its response to an anonymous target). Gene sets covering these targets (e.g. "
                "`gene_sets=` a GO BP GMT) embed them.",
                FallbackWarning,
                stacklevel=4,
            )
        return out

    def _real_and_pred(self, estimator, X):
        import anndata as ad

        from sktx.model_selection import make_query

        keys = self._keys(estimator)
        # checked and normalised once; the query, the prediction's controls and the
        # scored cells are all cut from this one object
        data = prepare_input(X, **keys)
        query = make_query(data, random_state=self.random_state)
        out = self._predict(estimator, query, keys)
        if not isinstance(out, ad.AnnData) or out.n_obs != query.n_obs:
            raise TypeError(
                f"{type(estimator).__name__}.predict(query) must return an AnnData with one "
                f"row per query cell ({query.n_obs}), got {type(out).__name__}."
            )
        genes = pd.Index(out.var_names)
        missing = genes.difference(data.genes)
        if len(missing):
            raise DataContractError(
                f"the prediction has {len(missing)} genes not in the scored data "
                f"(e.g. {list(missing[:5])}); predict genes of the input only."
            )
        real = data.select_genes(genes)
        is_ctrl = real.is_control
        pred_X = np.clip(np.asarray(matrix(out), dtype=np.float64), 0.0, None)
        ctrl_X = real.X[is_ctrl]
        ctrl_X = ctrl_X.toarray() if sp.issparse(ctrl_X) else ctrl_X
        pred_obs = pd.DataFrame(
            {keys["perturbation_key"]: np.concatenate([query.labels, real.labels[is_ctrl]])}
        )
        if keys["cell_type_key"]:
            pred_obs[keys["cell_type_key"]] = np.concatenate(
                [query.cell_types, real.cell_types[is_ctrl]]
            )
        pred_obs.index = pd.Index([f"c{i}" for i in range(len(pred_obs))])
        pred = ad.AnnData(np.vstack([pred_X, ctrl_X]), obs=pred_obs, var=pd.DataFrame(index=genes))
        # the prediction is log1p by construction: say so rather than have it guessed
        return real, prepare_input(pred, normalize="log1p", **keys), keys

    def __call__(self, estimator, X, y=None) -> float:
        real, pred, keys = self._real_and_pred(estimator, X)
        if self.metric == "vcc":
            base = build_mean_baseline(real, **keys)  # canonical labels, as `real`
            value = vcc_score(real, pred, baseline=base, **keys)
        else:
            ref = Reference(real, **keys)
            table = ref.table(ref.read(pred), [self._metric])
            value = float(np.nan_to_num(table[self.metric].to_numpy(float), nan=0.0).mean())
        return value if self.greater_is_better else -value


def _scorer_for(metric: str) -> PerturbationScorer:
    """A new scorer of a registered metric, negated when smaller is better."""
    return PerturbationScorer(metric, greater_is_better=get_metric(metric).greater_is_better)


des_scorer = _scorer_for("des")
pds_scorer = _scorer_for("pds")
mae_scorer = _scorer_for("mae")
pearson_delta_scorer = _scorer_for("pearson_delta")
top_de_mse_scorer = _scorer_for("top_de_mse")
vcc_scorer = PerturbationScorer("vcc")


def get_scorer(name: str) -> PerturbationScorer:
    """A fresh scorer for a registered metric or the overall VCC score.

    Parameters
    ----------
    name : {"des", "pds", "neg_mae", "pearson_delta", "neg_top_de_mse", "vcc"} or str
        The scorer name of a metric of :func:`~sktx.metrics.available_metrics`:
        its name, or ``"neg_<name>"`` when smaller is better (the plain name is
        accepted too, e.g. ``"mae"``); or ``"vcc"``.

    Returns
    -------
    PerturbationScorer

    Examples
    --------
    >>> get_scorer("mae")
    PerturbationScorer('mae', greater_is_better=False)
    """
    metrics = available_metrics()
    scorers = {get_metric(m).scorer_name: m for m in metrics}
    metric = scorers.get(name, name if name in metrics else None)
    if metric is not None:
        return _scorer_for(metric)
    if name == "vcc":
        return PerturbationScorer("vcc")
    if name == "vcc2026":  # cell-eval2's 2026 score of raw-count predictions
        from sktx.metrics._vcc2026 import VCC2026Scorer

        return VCC2026Scorer()
    choices = sorted([*scorers, "vcc", "vcc2026"])
    raise ValueError(f"unknown scorer {name!r}; choose from {choices}.")
