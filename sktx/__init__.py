"""sktx: scikit-learn-style models of single-cell responses to genetic perturbations.

Estimators and submodules are imported lazily so that ``import sktx`` stays fast
and does not load torch until a neural model is used; ``sktx.datasets``,
``sktx.metrics`` and the other submodules are reachable as attributes after
``import sktx``, as in scikit-learn and scanpy.
"""

from __future__ import annotations

import importlib

from sktx.data import (
    DataContractError,
    PerturbationData,
    canonical_label,
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
    prepare,
    split_targets,
    validate_adata,
)

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_LAZY = {
    "GeneSelector": "sktx.selection",
    "PerturbationRegressor": "sktx.regressor",
    "ProgressiveFit": "sktx.progressive",
    "PerturbationSplit": "sktx.model_selection",
    "make_query": "sktx.model_selection",
    "predict_perturbations": "sktx._perturbations",
    "ControlBaseline": "sktx.baselines",
    "MeanBaseline": "sktx.baselines",
    "AdditiveBaseline": "sktx.baselines",
    "LinearBaseline": "sktx.baselines",
    "KNNBaseline": "sktx.baselines",
    "AcceleratedPerturbationRegressor": "sktx.accelerate",
    "UnseenContextWarning": "sktx.context",
    "write_submission": "sktx.submission",
}

#: Submodules reachable as ``sktx.<name>`` without importing them first.
_SUBMODULES = (
    "accelerate",
    "baselines",
    "callbacks",
    "cli",
    "context",
    "data",
    "datasets",
    "genesets",
    "graph",
    "metrics",
    "model_selection",
    "nn",
    "pl",
    "progressive",
    "regressor",
    "report",
    "selection",
    "submission",
)

__all__ = [
    "DataContractError",
    "PerturbationData",
    "__version__",
    "canonical_label",
    "check_genes",
    "get_matrix",
    "is_log_normalized",
    "log_normalize",
    "prepare",
    "split_targets",
    "validate_adata",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"sktx.{name}")
    else:
        raise AttributeError(f"module 'sktx' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})
