"""Torch modules behind `PerturbationRegressor` (they see tensors only, never AnnData)."""

from sktx.nn._loss import SetLoss, energy_distance, predict_cells
from sktx.nn._model import GeneTokenModel
from sktx.nn._precision import cpu_autocast_precision
from sktx.nn._sparse_attention import (
    NeighborAttention,
    SampledDot,
    SparseAggregate,
    SparseAttention,
    SparsePattern,
)

__all__ = [
    "GeneTokenModel",
    "NeighborAttention",
    "SampledDot",
    "SetLoss",
    "SparseAggregate",
    "SparseAttention",
    "SparsePattern",
    "cpu_autocast_precision",
    "energy_distance",
    "predict_cells",
]
