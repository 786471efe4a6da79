"""Datasets: the embedded simulator, an h5ad reader and public-data fetchers."""

from sktx.datasets._simulate import make_perturbseq

__all__ = ["make_perturbseq"]
