"""Read any Perturb-seq ``.h5ad`` into the sktx data contract."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from sktx.data import DataContractError, is_log_normalized, validate_adata
from sktx.data._normalize import log_normalize_inplace as _log_normalize_inplace
from sktx.data._values import check_finite_nonnegative as _check_finite_nonnegative

__all__ = ["load_h5ad"]

# Rows per chunk when a backed file's values are scanned: bounds memory at
# ~chunk x n_genes values whatever the file size.
_BACKED_CHUNK = 10_000
_TARGET_SUM = 1e4


def _read(path: Path, backed: str | None):
    """Open ``path`` with anndata, turning low-level errors into actionable ones."""
    import anndata as ad

    if not path.exists():
        raise FileNotFoundError(
            f"no file at `{path}`. Check the path; the shared example datasets live in "
            "`../shared/data` (e.g. `../shared/data/norman2019_mcfaline2023_devel.h5ad`), "
            "and `sktx.datasets.fetch_*` functions download public screens."
        )
    if path.is_dir():
        raise IsADirectoryError(
            f"`{path}` is a directory, not an .h5ad file. A zarr store is read with "
            "`anndata.read_zarr`; a 10x folder with `scanpy.read_10x_mtx` (then write "
            "`adata.write_h5ad(...)` or pass the AnnData to sktx directly)."
        )
    try:
        return ad.read_h5ad(path, backed=backed)
    except Exception as err:  # h5py/anndata raise OSError, KeyError, TypeError, ...
        raise OSError(
            f"could not read `{path}` as an AnnData .h5ad file ({type(err).__name__}: {err}). "
            "Fix: make sure the file is an .h5ad written by `AnnData.write_h5ad` (a 10x "
            "`.h5` is read with `scanpy.read_10x_h5`, a `.loom` with `anndata.read_loom`); if "
            "it was downloaded, the copy may be truncated: delete it and download it again."
        ) from err


def _check_backed_values(adata, where: str) -> None:
    """NaN/inf/negative scan of a backed ``X`` in row chunks (never loads it whole)."""
    names = adata.obs_names
    for start in range(0, adata.n_obs, _BACKED_CHUNK):
        stop = min(start + _BACKED_CHUNK, adata.n_obs)
        _check_finite_nonnegative(adata.X[start:stop], where, names[start:stop])


def _warn_missing_controls(adata, info, cell_type_key: str, control_label: str) -> None:
    types = np.unique(info.cell_types)
    with_ctrl = set(np.unique(info.cell_types[info.is_control]).tolist())
    lacking = [t for t in types.tolist() if t not in with_ctrl]
    if lacking:
        warnings.warn(
            f"cell types {lacking} in `obs[{cell_type_key!r}]` have no `{control_label}` "
            "cells; their perturbations cannot be compared with matched controls.",
            UserWarning,
            stacklevel=3,
        )


def load_h5ad(
    path: str | os.PathLike,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    normalize: bool | str = "auto",
    backed: str | None = None,
):
    """Read a Perturb-seq ``.h5ad`` file into the sktx data contract.

    The file is read, checked with :func:`sktx.validate_adata` (labels, gene
    names, NaN/inf/negative values), and, when it holds raw counts,
    log1p-normalised (library size 10,000) with the counts kept in
    ``layers['counts']``. The label conventions used are recorded in
    ``uns['sktx']`` so downstream tools can pick them up.

    Parameters
    ----------
    path : str or path-like
        The ``.h5ad`` file.
    perturbation_key : str, default="target_gene"
        ``obs`` column naming each cell's perturbation (``"A+B"`` for
        combinations).
    control_label : str, default="non-targeting"
        Label of control cells in ``obs[perturbation_key]`` (e.g.
        ``"control"``, ``"ctrl"``).
    cell_type_key : str, optional
        ``obs`` column with the cell type / context; checked like the labels.
        A warning is given when a cell type has no control cells.
    normalize : {"auto", True, False}, default="auto"
        ``"auto"`` normalises when the matrix looks like counts (see
        :func:`sktx.is_log_normalized`); ``True`` always treats ``X`` as counts
        and normalises; ``False`` leaves ``X`` as stored.
    backed : {None, "r"}, default=None
        ``"r"`` opens the file read-only without loading ``X`` into memory.
        Labels and gene names are checked, values are scanned in chunks of
        10,000 cells, and ``X`` is returned as stored (no normalisation:
        ``uns['sktx']['x_is_log1p']`` says what it holds).

    Returns
    -------
    AnnData
        A new object (backed when ``backed="r"``) with ``uns['sktx']``:

        - ``perturbation_key``, ``control_label`` : str, the conventions used;
        - ``cell_type_key`` : str, only when one was given;
        - ``source`` : str, the absolute path read;
        - ``normalized`` : bool, True when this call log-normalised ``X``
          (then ``layers['counts']`` holds the raw counts, ``uns['log1p']`` is
          set and ``target_sum`` : float records the library size);
        - ``x_is_log1p`` : bool, whether ``X`` holds log1p values on return.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    OSError
        The file is not a readable ``.h5ad`` (corrupt, truncated, other format).
    DataContractError
        The content breaks the data contract (e.g. ``perturbation_key`` not in
        ``obs``: the message lists the columns).
    ValueError
        Invalid ``normalize`` or ``backed``.

    See Also
    --------
    sktx.validate_adata : the checks applied.
    sktx.log_normalize : the normalisation applied.

    Examples
    --------
    >>> import tempfile, os
    >>> from sktx.datasets import make_perturbseq, load_h5ad
    >>> path = os.path.join(tempfile.mkdtemp(), "screen.h5ad")
    >>> make_perturbseq(n_cells=200, n_genes=30, n_perturbations=4, random_state=0).write_h5ad(path)
    >>> adata = load_h5ad(path)
    >>> adata.uns["sktx"]["normalized"], "counts" in adata.layers
    (True, True)
    """
    if normalize not in ("auto", True, False):
        raise ValueError(f"`normalize` must be 'auto', True or False, got {normalize!r}.")
    if backed not in (None, "r"):
        raise ValueError(
            f"`backed` must be None or 'r', got {backed!r}; sktx only reads files and never "
            "writes into them, so 'r+' is not offered."
        )
    if backed is not None and normalize is True:
        raise ValueError(
            "`normalize=True` cannot be applied to a backed file (`backed='r'`) without "
            "loading it. Use `backed=None`, or `normalize='auto'`/False and normalise batches."
        )
    path = Path(path).expanduser().resolve()
    return _to_contract(
        _read(path, backed),
        source=path,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        normalize=normalize,
        backed=backed,
    )


def _to_contract(
    adata,
    *,
    source: Path,
    perturbation_key: str,
    control_label: str,
    cell_type_key: str | None,
    normalize: bool | str,
    backed: str | None,
):
    """Validate and normalise an AnnData this module just read (modified in place)."""
    try:
        info = validate_adata(
            adata,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
            check_values=backed is None,
        )
        if backed is not None:
            _check_backed_values(adata, "`X`")
    except DataContractError as err:
        if adata.isbacked:
            adata.file.close()
        raise DataContractError(f"{source.name}: {err}") from err
    if cell_type_key is not None:
        _warn_missing_controls(adata, info, cell_type_key, control_label)

    looks_log = is_log_normalized(adata)
    do_normalize = backed is None and (normalize is True or (normalize == "auto" and not looks_log))
    if do_normalize:
        # The object was just read, so normalising it in place copies nothing of the user's.
        _log_normalize_inplace(adata, _TARGET_SUM)
    meta = {
        "perturbation_key": perturbation_key,
        "control_label": control_label,
        "source": str(source),
        "normalized": bool(do_normalize),
        "x_is_log1p": bool(do_normalize or looks_log),
    }
    if cell_type_key is not None:
        meta["cell_type_key"] = cell_type_key
    if do_normalize:
        meta["target_sum"] = _TARGET_SUM
    adata.uns["sktx"] = meta
    return adata
