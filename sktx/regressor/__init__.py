"""The gene-token network estimator (skorch) and what it keeps once fitted."""

from sktx.regressor._estimator import PerturbationRegressor
from sktx.regressor._state import N_FEATURES, FittedState

__all__ = ["N_FEATURES", "FittedState", "PerturbationRegressor"]
