"""Download public Perturb-seq screens (with checksums) into a local cache."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from sktx.datasets._io import _read, _to_contract

__all__ = ["fetch_norman2019", "fetch_replogle2022_k562_essential", "get_data_dir"]

_ENV_VAR = "SKTX_DATA_DIR"
# scPerturb (Peidli et al. 2024, Nat Methods), RNA collection, Zenodo record 10044268
# (CC BY 4.0). The MD5 sums are those Zenodo lists for the files, as recorded in
# gao-lab/CASCADE@89ae952e:data/download/*/README.md (accessed there on 2024-03-17);
# they were not re-computed here because this build machine has no internet access.
_ZENODO = "https://zenodo.org/records/10044268/files"


def _combinations_to_plus(adata) -> None:
    """scPerturb joins combination targets with ``_``; sktx uses ``+``."""
    labels = adata.obs["perturbation"].astype(str)
    adata.obs["target_gene"] = labels.str.replace("_", "+", regex=False).astype("category")


def _copy_perturbation(adata) -> None:
    adata.obs["target_gene"] = adata.obs["perturbation"].astype(str).astype("category")


@dataclasses.dataclass(frozen=True)
class _Remote:
    """One downloadable file and how to read it into the contract."""

    url: str
    known_hash: str | None
    filename: str
    perturbation_key: str
    control_label: str
    # Fixes applied to the freshly read file (owned by us) before validation.
    prepare: Callable | None = None


# Tests point an entry at a local server with `dataclasses.replace`.
_REGISTRY: dict[str, _Remote] = {
    "norman2019": _Remote(
        url=f"{_ZENODO}/NormanWeissman2019_filtered.h5ad",
        known_hash="md5:c870e6967d91c017d9da827bab183cd6",
        filename="NormanWeissman2019_filtered.h5ad",
        perturbation_key="target_gene",
        control_label="control",
        prepare=_combinations_to_plus,
    ),
    "replogle2022_k562_essential": _Remote(
        url=f"{_ZENODO}/ReplogleWeissman2022_K562_essential.h5ad",
        known_hash="md5:d8cba17576d1a8afc0f7d71b79cad0f7",
        filename="ReplogleWeissman2022_K562_essential.h5ad",
        perturbation_key="target_gene",
        control_label="control",
        prepare=_copy_perturbation,
    ),
}


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Folder where fetched datasets are cached.

    In order: ``data_dir`` if given, the ``SKTX_DATA_DIR`` environment
    variable, else the user cache folder ``pooch.os_cache("sktx")`` (e.g.
    ``~/.cache/sktx`` on Linux).

    Examples
    --------
    >>> from sktx.datasets import get_data_dir
    >>> get_data_dir("/tmp/sktx-data").name
    'sktx-data'
    """
    import pooch

    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("sktx"))


def _download(name: str, data_dir, progressbar: bool) -> Path:
    import pooch
    import requests

    entry = _REGISTRY[name]
    folder = get_data_dir(data_dir)
    try:
        path = pooch.retrieve(
            url=entry.url,
            known_hash=entry.known_hash,
            fname=entry.filename,
            path=folder,
            progressbar=progressbar,
        )
    except ValueError as err:
        if "hash" not in str(err).lower():
            raise
        # pooch removes the bad download; say what happened and what to do.
        raise ValueError(
            f"checksum mismatch for `{entry.filename}` downloaded from {entry.url} "
            f"(expected {entry.known_hash}); the file was not kept. Retry (the download may "
            "have been cut); if it keeps failing the remote file has changed: please report "
            f"it. Details: {err}"
        ) from err
    except (requests.exceptions.RequestException, OSError) as err:
        raise OSError(
            f"could not download `{entry.filename}` from {entry.url} ({type(err).__name__}: "
            f"{err}). Check the internet connection, or download the file by hand into "
            f"`{folder}` (set `{_ENV_VAR}` or `data_dir=` to use another folder)."
        ) from err
    return Path(path)


def _fetch(name: str, data_dir, normalize, progressbar: bool):
    entry = _REGISTRY[name]
    path = _download(name, data_dir, progressbar)
    adata = _read(path, None)
    if entry.prepare is not None:
        entry.prepare(adata)
    adata.var_names_make_unique()
    out = _to_contract(
        adata,
        source=path,
        perturbation_key=entry.perturbation_key,
        control_label=entry.control_label,
        cell_type_key=None,
        normalize=normalize,
        backed=None,
    )
    out.uns["sktx"]["source"] = entry.url
    return out


_FETCH_PARAMS = """
    Parameters
    ----------
    data_dir : str or path-like, optional
        Cache folder; default ``SKTX_DATA_DIR`` or ``pooch.os_cache("sktx")``
        (see :func:`get_data_dir`). A file already there with the right
        checksum is not downloaded again.
    normalize : {"auto", True, False}, default="auto"
        Passed to :func:`load_h5ad` (the files hold raw counts, so ``"auto"``
        log1p-normalises and keeps the counts in ``layers['counts']``).
    progressbar : bool, default=False
        Show a download progress bar (needs ``tqdm``).
"""


def fetch_norman2019(
    *,
    data_dir: str | os.PathLike | None = None,
    normalize: bool | str = "auto",
    progressbar: bool = False,
):
    """Norman et al. 2019 CRISPRa screen in K562 (singles and pairs), from scPerturb.

    Downloads ``NormanWeissman2019_filtered.h5ad`` (raw counts; a large file,
    fetched once) from the scPerturb Zenodo record 10044268, checks its MD5
    (``c870e6967d91c017d9da827bab183cd6``, as listed by Zenodo), and reads it
    with :func:`load_h5ad`.

    scPerturb joins the two targets of a pair with ``_``; this function adds
    ``obs['target_gene']`` with ``+`` instead (``"AHR+KLF1"``) and keeps
    ``obs['perturbation']``. Controls are labelled ``"control"``. Duplicated
    gene symbols are made unique (``-1`` suffix).
    {params}
    Returns
    -------
    AnnData
        Loaded through :func:`load_h5ad` with ``perturbation_key="target_gene"``,
        ``control_label="control"``; ``uns['sktx']['source']`` is the URL.

    Notes
    -----
    Norman, T. M. et al. Exploring genetic interaction manifolds constructed
    from rich single-cell phenotypes. Science 365, 786-793 (2019).
    Peidli, S. et al. scPerturb: harmonized single-cell perturbation data.
    Nat. Methods 21, 531-540 (2024). Data licence: CC BY 4.0.

    Examples
    --------
    >>> from sktx.datasets import fetch_norman2019
    >>> adata = fetch_norman2019()  # doctest: +SKIP
    >>> adata.uns["sktx"]["control_label"]  # doctest: +SKIP
    'control'
    """
    return _fetch("norman2019", data_dir, normalize, progressbar)


def fetch_replogle2022_k562_essential(
    *,
    data_dir: str | os.PathLike | None = None,
    normalize: bool | str = "auto",
    progressbar: bool = False,
):
    """Replogle et al. 2022 CRISPRi screen of essential genes in K562, from scPerturb.

    Downloads ``ReplogleWeissman2022_K562_essential.h5ad`` (raw counts; about
    2,000 single-gene knock-downs of essential genes; a large file) from the scPerturb
    Zenodo record 10044268, checks its MD5 (``d8cba17576d1a8afc0f7d71b79cad0f7``,
    as listed by Zenodo), and reads it with :func:`load_h5ad`. Loading it in
    memory needs several GB of RAM.

    ``obs['target_gene']`` copies scPerturb's ``obs['perturbation']``; controls
    are labelled ``"control"``.
    {params}
    Returns
    -------
    AnnData
        Loaded through :func:`load_h5ad` with ``perturbation_key="target_gene"``,
        ``control_label="control"``; ``uns['sktx']['source']`` is the URL.

    Notes
    -----
    Replogle, J. M. et al. Mapping information-rich genotype-phenotype
    landscapes with genome-scale Perturb-seq. Cell 185, 2559-2575 (2022).
    Peidli, S. et al. Nat. Methods 21, 531-540 (2024). Data licence: CC BY 4.0.

    Examples
    --------
    >>> from sktx.datasets import fetch_replogle2022_k562_essential
    >>> adata = fetch_replogle2022_k562_essential()  # doctest: +SKIP
    """
    return _fetch("replogle2022_k562_essential", data_dir, normalize, progressbar)


for _func in (fetch_norman2019, fetch_replogle2022_k562_essential):
    _func.__doc__ = _func.__doc__.replace("{params}", _FETCH_PARAMS)
