"""Shared fixtures: simulated data and the real datasets read from ../shared at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
GENESETS = SHARED / "genesets"
NORMAN = DATA / "norman2019_mcfaline2023_devel.h5ad"
DATLINGER = DATA / "datlinger2017_jurkat.h5ad"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real data not found at {path}; tests expect the shared folder beside the "
            "checkout (../shared/data, ../shared/genesets)"
        )
    return path


@pytest.fixture(scope="session")
def norman_path() -> Path:
    return _need(NORMAN)


@pytest.fixture(scope="session")
def datlinger_path() -> Path:
    return _need(DATLINGER)


@pytest.fixture(scope="session")
def genesets_dir() -> Path:
    return _need(GENESETS)


@pytest.fixture(scope="session")
def norman(norman_path):
    """Norman/McFaline devel data as read from disk (treat as read-only)."""
    import anndata as ad

    return ad.read_h5ad(norman_path)


@pytest.fixture(scope="session")
def sim():
    """A small simulated screen with controls, singles and combinations (read-only)."""
    from sktx.datasets import make_perturbseq

    return make_perturbseq(n_cells=600, n_genes=120, n_perturbations=8, random_state=0)
