"""The data layer: one checked, normalised object per input (:func:`prepare`).

Everything above this layer (gene sets and selection, the network, estimators,
evaluation, the command line) receives a :class:`PerturbationData` and never
re-checks or re-normalises it. Nothing here imports from the layers above.
"""

from sktx.data._backed import BackedRows, column_moments, is_backed, row_chunks
from sktx.data._checks import (
    PerturbationInfo,
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
    validate_adata,
)
from sktx.data._errors import DataContractError
from sktx.data._labels import (
    canonical_label,
    canonical_labels,
    canonical_obs_labels,
    split_targets,
)
from sktx.data._object import NORMALIZE, PerturbationData, prepare
from sktx.data._pseudobulk import Pseudobulk, group_means, nonzero_level, pseudobulk
from sktx.data._sets import CellGroups, SetBatch, SetSampler

__all__ = [
    "NORMALIZE",
    "BackedRows",
    "CellGroups",
    "DataContractError",
    "PerturbationData",
    "PerturbationInfo",
    "Pseudobulk",
    "SetBatch",
    "SetSampler",
    "canonical_label",
    "canonical_labels",
    "canonical_obs_labels",
    "check_genes",
    "column_moments",
    "get_matrix",
    "group_means",
    "is_backed",
    "is_log_normalized",
    "log_normalize",
    "nonzero_level",
    "prepare",
    "pseudobulk",
    "row_chunks",
    "split_targets",
    "validate_adata",
]
