"""The metric registry: one :class:`Metric` entry per per-perturbation metric.

:func:`~sktx.metrics.perturbation_metrics`, the ``*_score`` functions,
:func:`~sktx.metrics.get_scorer`, :func:`~sktx.metrics.vcc_score` and the
report tables (:func:`sktx.report.evaluate_predictions`) all read this registry,
so a new metric is one :func:`register_metric` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Metric",
    "MetricContext",
    "available_metrics",
    "get_metric",
    "register_metric",
    "unregister_metric",
]

# Names a metric may not take: the overall score and the table's label columns.
_RESERVED = frozenset({"vcc", "vcc2026", "perturbation", "cell_type", "model"})


class MetricContext:
    """What a metric function reads: real and predicted pseudobulks of one cell type.

    Row ``i`` of every array is perturbation ``perturbations[i]``; each side's
    delta is relative to its *own* controls (as cell-eval computes them).

    Attributes
    ----------
    perturbations : ndarray of str of shape (n_perturbations,)
        Perturbation labels, sorted.
    genes : Index
        Gene names (the columns).
    real_means, pred_means : ndarray of shape (n_perturbations, n_genes)
        Mean log1p profile of the real and the predicted cells of each perturbation.
    real_control, pred_control : ndarray of shape (n_genes,)
        Mean log1p profile of each side's control cells.
    real_delta, pred_delta : ndarray of shape (n_perturbations, n_genes)
        ``*_means - *_control``.
    fdr_threshold : float
        Benjamini-Hochberg level for DE genes.
    n_top_de : int
        Number of top DE genes a metric such as ``top_de_mse`` uses.
    """

    def __init__(
        self,
        *,
        perturbations: np.ndarray,
        genes: pd.Index,
        real_means: np.ndarray,
        pred_means: np.ndarray,
        real_control: np.ndarray,
        pred_control: np.ndarray,
        fdr_threshold: float = 0.05,
        n_top_de: int = 20,
        real_de: Callable[[], list] | None = None,
        pred_de: Callable[[], list] | None = None,
    ) -> None:
        self.perturbations = perturbations
        self.genes = genes
        self.real_means = real_means
        self.pred_means = pred_means
        self.real_control = real_control
        self.pred_control = pred_control
        self.real_delta = real_means - real_control
        self.pred_delta = pred_means - pred_control
        self.fdr_threshold = fdr_threshold
        self.n_top_de = n_top_de
        self._de_source = {"real": real_de, "pred": pred_de}
        self._de_cache: dict[str, list] = {}

    def _de(self, side: str) -> list:
        if side not in self._de_cache:
            source = self._de_source[side]
            if source is None:
                raise RuntimeError(
                    f"`{side}_de` is computed only for metrics registered with "
                    "`needs_de=True` (the Mann-Whitney tests are the costly part); "
                    "set `needs_de=True` on the Metric that reads it."
                )
            self._de_cache[side] = source()
        return self._de_cache[side]

    @property
    def real_de(self) -> list:
        """:class:`~sktx.metrics._de.DEResult` of each real perturbation vs the real controls."""
        return self._de("real")

    @property
    def pred_de(self) -> list:
        """DE of each predicted perturbation vs the prediction's controls (computed on use)."""
        return self._de("pred")


@dataclass(frozen=True)
class Metric:
    """One per-perturbation metric, as the registry holds it.

    Parameters
    ----------
    name : str
        Column name in :func:`~sktx.metrics.perturbation_metrics` and the name
        for ``metrics=``, :class:`~sktx.metrics.PerturbationScorer` and
        :func:`~sktx.metrics.get_scorer` (as ``"neg_<name>"`` when smaller is better).
    func : callable
        ``func(ctx: MetricContext)`` -> one value per perturbation (array of
        shape ``(n_perturbations,)``), or a mapping of column name to such arrays
        holding ``name`` first and extra columns after it (``des`` adds
        ``n_de_real``, ``n_de_pred``).
    greater_is_better : bool, default=True
        Direction; the scorer negates the value when False.
    needs_de : bool, default=False
        ``func`` reads ``ctx.real_de`` / ``ctx.pred_de`` (Mann-Whitney DE, the
        costly part, computed only when a selected metric needs it).
    label : str, optional
        Display name in reports (default ``name``).
    in_vcc : bool, default=False
        Part of the averaged VCC score (:func:`~sktx.metrics.vcc_score`), scaled
        against the cell-mean baseline: ``(u - b) / (1 - b)`` when greater is
        better (the metric's best value must be 1), ``1 - u / b`` otherwise (best 0).
    nan_value : float, optional
        Value a NaN row counts as in the ``*_score`` mean (``pearson_delta``: 0
        for a constant delta); None keeps NaN.
    doc : str, default=""
        Definition: a one-line summary, optionally a blank line and details.

    Examples
    --------
    >>> import numpy as np
    >>> m = Metric("max_abs_error", lambda ctx: np.abs(ctx.pred_means - ctx.real_means).max(1),
    ...            greater_is_better=False, label="max|err|")
    >>> m.label, m.scorer_name
    ('max|err|', 'neg_max_abs_error')
    """

    name: str
    func: Callable[[MetricContext], np.ndarray | Mapping[str, np.ndarray]]
    greater_is_better: bool = True
    needs_de: bool = False
    label: str | None = None
    in_vcc: bool = False
    nan_value: float | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"metric name {self.name!r} must be a Python identifier (it names a column, "
                "a scorer and a keyword), e.g. 'max_abs_error'."
            )
        if not callable(self.func):
            raise TypeError(f"Metric {self.name!r}: `func` must be callable, got {self.func!r}.")
        if self.label is None:
            object.__setattr__(self, "label", self.name)

    @property
    def scorer_name(self) -> str:
        """Its name for :func:`~sktx.metrics.get_scorer` (``neg_`` prefix when lower is better)."""
        return self.name if self.greater_is_better else f"neg_{self.name}"


_REGISTRY: dict[str, Metric] = {}
_BUILTIN: set[str] = set()


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add a metric; from then on every sktx metric consumer computes it.

    Parameters
    ----------
    metric : Metric
        The entry; its ``name`` must be new unless ``replace=True``.
    replace : bool, default=False
        Overwrite a metric registered earlier with the same name (the
        built-in ones cannot be replaced).

    Returns
    -------
    Metric
        ``metric`` (so the call can decorate an assignment).

    Examples
    --------
    >>> import numpy as np
    >>> m = register_metric(Metric("max_abs_error",
    ...     lambda ctx: np.abs(ctx.pred_means - ctx.real_means).max(axis=1),
    ...     greater_is_better=False))
    >>> "max_abs_error" in available_metrics()
    True
    >>> unregister_metric("max_abs_error")
    """
    if not isinstance(metric, Metric):
        raise TypeError(
            f"register_metric expects a `sktx.metrics.Metric`, got {type(metric).__name__}; "
            "build one with `Metric(name, func, greater_is_better=...)`."
        )
    name = metric.name
    if name in _RESERVED:
        raise ValueError(f"{name!r} is reserved ({sorted(_RESERVED)}); choose another name.")
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in metric and cannot be replaced; rename yours.")
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"a metric named {name!r} is already registered; pass `replace=True` to "
            "overwrite it or `unregister_metric` it first."
        )
    taken = {m.scorer_name: m.name for m in _REGISTRY.values() if m.name != name}
    if metric.scorer_name in taken or name in taken:
        clash = taken.get(metric.scorer_name, taken.get(name))
        raise ValueError(
            f"metric {name!r} (scorer {metric.scorer_name!r}) clashes with the scorer of "
            f"{clash!r}; choose another name."
        )
    _REGISTRY[name] = metric
    return metric


def _register_builtin(metric: Metric) -> Metric:
    register_metric(metric)
    _BUILTIN.add(metric.name)
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric added with :func:`register_metric` (built-in ones stay).

    Parameters
    ----------
    name : str

    Examples
    --------
    >>> unregister_metric("des")
    Traceback (most recent call last):
    ...
    ValueError: 'des' is a built-in metric and cannot be removed.
    """
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in metric and cannot be removed.")
    get_metric(name)
    del _REGISTRY[name]


def get_metric(name: str) -> Metric:
    """The registered :class:`Metric` called ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    Metric

    Examples
    --------
    >>> get_metric("mae").greater_is_better, get_metric("top_de_mse").label
    (False, 'top20_DE_MSE')
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown metric {name!r}; choose from {list(available_metrics())}."
        ) from None


def available_metrics() -> tuple[str, ...]:
    """Names of all registered metrics: the built-in ones first, then in registration order.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> available_metrics()[:5]
    ('des', 'pds', 'mae', 'pearson_delta', 'top_de_mse')
    """
    return tuple(_REGISTRY)
