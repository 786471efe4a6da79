"""sktx: scikit-learn-style models of single-cell responses to genetic perturbations."""

from sktx._validation import DataContractError, validate_adata

__version__ = "0.1.0.dev0"

__all__ = ["DataContractError", "__version__", "validate_adata"]
