"""sktx: scikit-learn-style models of single-cell responses to genetic perturbations.

The estimators are imported lazily so that ``import sktx`` stays fast and does not load
torch until a neural model is used.
"""

from __future__ import annotations

import importlib

from sktx._validation import (
    DataContractError,
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
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
    "ControlBaseline": "sktx.baselines",
    "MeanBaseline": "sktx.baselines",
    "AdditiveBaseline": "sktx.baselines",
    "LinearBaseline": "sktx.baselines",
    "AcceleratedPerturbationRegressor": "sktx.accelerate",
}

__all__ = [
    "DataContractError",
    "__version__",
    "check_genes",
    "get_matrix",
    "is_log_normalized",
    "log_normalize",
    "split_targets",
    "validate_adata",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sktx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
