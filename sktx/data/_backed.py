"""Row-wise reading of backed AnnData (``anndata.read_h5ad(path, backed="r")``).

A backed ``X`` stays on disk; sktx reads it a few rows at a time so memory is
bounded by ``rows x genes`` of one minibatch or one chunk, whatever the number
of cells. Three places read it:

* the data-contract scan (NaN/inf/negative values), chunk by chunk;
* statistics over all cells (group means, gene means/variances), chunk by
  chunk, in the same fixed chunks for in-memory data so both give the same
  numbers;
* the minibatch sampler, which asks for arbitrary rows (h5py needs increasing
  indices, so rows are read sorted and unique, then put back in order).

Raw counts are normalised on the fly, one row at a time, with the same code
as the in-memory path (:func:`sktx.data._normalize.log_normalize_inplace`):
library size over *all genes stored in the file* (also for a view that keeps
fewer genes, which is what :meth:`sktx.GeneSelector.transform` needs), then
``log1p``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from sktx.data._errors import DataContractError
from sktx.data._normalize import TARGET_SUM, log_normalize_inplace
from sktx.data._values import ValueStats, check_finite_nonnegative, check_numeric_dtype

__all__ = [
    "CHUNK_ROWS",
    "BackedRows",
    "check_backed_values",
    "column_moments",
    "is_backed",
    "row_chunks",
]

# Rows per chunk for statistics over all cells (in memory and backed alike):
# ~8k rows x 5k genes of CSR is tens of MB, and 1e6 cells is ~120 reads.
CHUNK_ROWS = 8192


def is_backed(adata) -> bool:
    """True for an AnnData (or a view of one) whose ``X`` is on disk."""
    return bool(getattr(adata, "isbacked", False))


def row_chunks(n_rows: int, chunk_rows: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row chunks covering ``n_rows``."""
    step = int(chunk_rows or CHUNK_ROWS)
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _open_x(adata):
    """The on-disk ``X`` of a backed AnnData (sparse dataset or h5py dataset)."""
    import h5py
    from anndata.io import sparse_dataset

    manager = adata.file
    try:
        if not manager.is_open:
            # anndata's own `adata.X` reopens a closed file the same way (same mode)
            manager.open()
        node = manager["X"]
    except (OSError, KeyError) as err:
        raise DataContractError(
            f"cannot read `X` of the backed AnnData from {manager.filename!s} ({err}). "
            "The file must stay on disk, readable, while sktx reads it; reopen it with "
            "`anndata.read_h5ad(path, backed='r')`."
        ) from err
    if isinstance(node, h5py.Group):
        ds = sparse_dataset(node)
        if ds.format != "csr":
            raise DataContractError(
                f"backed `X` in {manager.filename!s} is stored as {ds.format.upper()}; sktx "
                "reads backed data row by row, which needs CSR (or dense) storage. Rewrite "
                "the file with CSR `X`, e.g. `a = anndata.read_h5ad(path); "
                "a.X = a.X.tocsr(); a.write_h5ad(new_path)`."
            )
        return ds
    if isinstance(node, h5py.Dataset):
        return node
    raise DataContractError(
        f"backed `X` in {manager.filename!s} has unsupported storage {type(node).__name__}; "
        "expected a CSR group or a dense dataset."
    )


def _positions(index, n: int) -> np.ndarray:
    """Integer positions selected by an anndata view index (slice or array)."""
    return np.arange(n, dtype=np.int64)[index]


class BackedRows:
    """Read rows of a backed AnnData's ``X``, normalised like the in-memory path.

    Parameters
    ----------
    adata : AnnData
        Backed (``backed="r"`` or ``"r+"``), or a view of one. Not modified.
    normalize : bool
        Library-size normalise (target sum 1e4) and ``log1p`` each row, as
        :func:`sktx.log_normalize` does; for raw counts.
    float32 : bool, default=True
        Return float32 CSR (what the regressor trains on); ``False`` keeps
        the stored float dtype (what :class:`sktx.GeneSelector` sees in memory).

    Attributes
    ----------
    shape : tuple of int
        ``(n_obs, n_vars)`` of ``adata``.
    dtype : numpy dtype
        Stored dtype of ``X``.

    Examples
    --------
    >>> import tempfile, os, anndata as ad
    >>> from sktx.datasets import make_perturbseq
    >>> path = os.path.join(tempfile.mkdtemp(), "screen.h5ad")
    >>> make_perturbseq(200, 30, 3, random_state=0).write_h5ad(path)
    >>> backed = ad.read_h5ad(path, backed="r")
    >>> BackedRows(backed, normalize=True)[[5, 1, 5]].shape
    (3, 30)
    """

    def __init__(self, adata, *, normalize: bool, float32: bool = True):
        self._ds = _open_x(adata)
        n_file, g_file = self._ds.shape
        if adata.is_view:
            self._rows = _positions(adata._oidx, n_file)
            cols = _positions(adata._vidx, g_file)
            self._cols = None if np.array_equal(cols, np.arange(g_file)) else cols
        else:
            self._rows = np.arange(n_file, dtype=np.int64)
            self._cols = None
        self.shape = (len(self._rows), g_file if self._cols is None else len(self._cols))
        self.dtype = np.dtype(self._ds.dtype)
        self.normalize = bool(normalize)
        self.float32 = bool(float32)
        self.filename = str(adata.file.filename)

    def subset(self, rows=None, cols=None, **options) -> BackedRows:
        """A reader of some of these rows / genes (positions in this reader); reads nothing.

        ``options`` (``normalize``, ``float32``) override this reader's.
        """
        out = copy.copy(self)
        if rows is not None:
            out._rows = self._rows[np.asarray(rows, dtype=np.int64)]
        if cols is not None:
            cols = np.asarray(cols, dtype=np.int64)
            out._cols = cols if self._cols is None else self._cols[cols]
        g_file = self._ds.shape[1]
        out.shape = (len(out._rows), g_file if out._cols is None else len(out._cols))
        for name, value in options.items():
            setattr(out, name, bool(value))
        return out

    def _read_file_rows(self, file_rows: np.ndarray):
        """Rows (increasing, unique) of the stored matrix, all stored genes."""
        if len(file_rows) and file_rows[-1] - file_rows[0] + 1 == len(file_rows):
            block = self._ds[int(file_rows[0]) : int(file_rows[-1]) + 1]  # one contiguous read
        else:
            block = self._ds[file_rows]
        return block if sp.issparse(block) else np.asarray(block)

    def raw_rows(self, rows) -> sp.csr_matrix | np.ndarray:
        """Stored values of ``rows`` (positions in ``adata``), all stored genes, in order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        file_rows = self._rows[rows]
        uniq, inverse = np.unique(file_rows, return_inverse=True)
        block = self._read_file_rows(uniq)
        if len(uniq) == len(file_rows) and np.array_equal(uniq, file_rows):
            return block
        return block[inverse]

    def _finish(self, block):
        """Normalise (whole stored rows), cast and keep the view's genes."""
        if self.normalize:
            import anndata as ad

            tmp = ad.AnnData(X=block.copy() if sp.issparse(block) else np.array(block))
            log_normalize_inplace(tmp, TARGET_SUM, keep_counts=False)
            block = tmp.X
        if self.float32:
            block = sp.csr_matrix(block, dtype=np.float32)
        elif not sp.issparse(block):
            block = sp.csr_matrix(block)
        if self._cols is not None:
            block = block[:, self._cols]
        return block

    def __getitem__(self, rows) -> sp.csr_matrix:
        """CSR of ``rows`` (any order, repeats allowed), normalised when asked."""
        if isinstance(rows, slice):
            rows = np.arange(self.shape[0])[rows]
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError("BackedRows supports a 1-D array of row positions only")
        file_rows = self._rows[rows]
        uniq, inverse = np.unique(file_rows, return_inverse=True)
        block = self._finish(self._read_file_rows(uniq))
        if len(uniq) == len(file_rows) and np.array_equal(uniq, file_rows):
            return block
        return block[inverse]

    def chunks(self, chunk_rows: int | None = None) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(start, block)`` over consecutive row chunks, normalised when asked."""
        for start, stop in row_chunks(self.shape[0], chunk_rows):
            yield start, self[np.arange(start, stop)]

    def to_csr(self) -> sp.csr_matrix:
        """Every row in memory (for prediction, whose output is dense anyway)."""
        parts = [block for _, block in self.chunks()]
        return sp.vstack(parts, format="csr") if parts else sp.csr_matrix(self.shape)


def check_backed_values(adata, where: str) -> ValueStats:
    """Scan a backed ``X`` for non-numeric dtype, NaN/inf and negatives, chunk by chunk.

    Whole stored rows are scanned (for a view with fewer genes too): raw
    counts are normalised by the total over all stored genes, so a bad value
    in any of them would spoil the row.
    """
    reader = BackedRows(adata, normalize=False, float32=False)
    check_numeric_dtype(reader.dtype, where)
    names = adata.obs_names
    stats = ValueStats(0.0, True)
    for start, stop in row_chunks(reader.shape[0]):
        block = reader.raw_rows(np.arange(start, stop))
        stats = stats.merge(check_finite_nonnegative(block, where, names[start:stop]))
    return stats


def column_moments(X, *, log_base: float | None = None) -> dict[str, np.ndarray]:
    """Per-gene mean and variance over all rows, accumulated over fixed row chunks.

    Parameters
    ----------
    X : ndarray, sparse matrix or BackedRows
        log1p values (a backed reader normalises counts on the fly). In-memory
        and backed matrices go through the same chunks, so equal values give
        bit-identical moments.
    log_base : float, optional
        Base of the ``log1p`` (``uns['log1p']['base']``); None is natural log.

    Returns
    -------
    dict
        ``mean``, ``var`` of the log1p values (population variance) and
        ``mean_expm1``, ``var_expm1`` of ``expm1`` of them (unbiased variance,
        as scanpy's ``seurat`` flavour computes), all float64.

    Examples
    --------
    >>> import numpy as np
    >>> column_moments(np.log1p(np.array([[0.0, 1.0], [2.0, 3.0]])))["mean_expm1"]
    array([1., 2.])
    """
    n_rows, n_genes = X.shape
    sums = {k: np.zeros(n_genes) for k in ("x", "x2", "e", "e2")}
    for start, stop in row_chunks(n_rows):
        block = sp.csr_matrix(X[start:stop])
        x = block.data
        # scanpy computes expm1 in the stored dtype, then moments in float64
        e = np.expm1(x * np.log(log_base) if log_base is not None else x).astype(np.float64)
        x = x.astype(np.float64)
        for key, w in (("x", x), ("x2", x * x), ("e", e), ("e2", e * e)):
            sums[key] += np.bincount(block.indices, weights=w, minlength=n_genes)
    n = max(n_rows, 1)
    mean, mean_e = sums["x"] / n, sums["e"] / n
    var = sums["x2"] / n - mean**2
    var_e = sums["e2"] / n - mean_e**2
    if n_rows > 1:
        var_e *= n_rows / (n_rows - 1)
    return {
        "mean": mean,
        "var": np.maximum(var, 0.0),
        "mean_expm1": mean_e,
        "var_expm1": np.maximum(var_e, 0.0),
    }
