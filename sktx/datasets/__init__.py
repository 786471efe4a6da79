"""Datasets: the embedded simulator, an h5ad reader and public-data fetchers."""

from sktx.datasets._fetch import (
    fetch_norman2019,
    fetch_replogle2022_k562_essential,
    get_data_dir,
)
from sktx.datasets._io import load_h5ad
from sktx.datasets._simulate import make_perturbseq

__all__ = [
    "fetch_norman2019",
    "fetch_replogle2022_k562_essential",
    "get_data_dir",
    "load_h5ad",
    "make_perturbseq",
]
