"""``PerturbationData``: a Perturb-seq screen checked once, normalised once, passed down.

:func:`prepare` is the one entry point from an :class:`~anndata.AnnData` into
sktx. It runs the data contract (:func:`sktx.validate_adata`), takes the one
counts-vs-log1p decision, puts the labels in canonical form and keeps what every
estimator, metric and command needs. Estimators accept an AnnData (and prepare
it once per call) or a :class:`PerturbationData` (used as it is).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.data._backed import BackedRows, is_backed
from sktx.data._checks import check_genes, get_matrix, require_cells, validate
from sktx.data._errors import DataContractError
from sktx.data._labels import canonical_labels
from sktx.data._normalize import TARGET_SUM, log_normalize_inplace
from sktx.data._sets import CellGroups
from sktx.data._values import ValueStats

__all__ = ["NORMALIZE", "PerturbationData", "prepare"]

#: Accepted values of ``normalize=``.
NORMALIZE = ("auto", "counts", "log1p")
# log1p of library-size-normalised counts stays below ~15 (log1p(1e6) = 13.8 even
# for CPM with one gene holding every read); larger non-integer values are not log1p.
_LOG1P_MAX = 20.0
# Calls of `prepare` that built a new object (not a pass-through), for the
# validation-count benchmark (benchmarks/bench_redesign.py).
_BUILDS = {"prepare": 0, "normalize_decisions": 0}


@dataclass(frozen=True, eq=False)
class PerturbationData:
    """A checked, normalised Perturb-seq screen (cells x genes); made by :func:`prepare`.

    Attributes
    ----------
    X : ndarray, csr_matrix or BackedRows
        log1p expression (dense stays dense, CSR stays CSR, in the dtype the
        input or scanpy's normalisation gave), or a reader of a backed file
        that normalises rows as they are read.
    counts : ndarray, csr_matrix, BackedRows or None
        Raw counts when the input has them (integer ``X`` or ``layers['counts']``).
    labels : ndarray of str
        Canonical perturbation label of each cell (``"A+B"``, targets sorted).
    is_control : ndarray of bool
        Cells labelled ``control_label``.
    cell_types : ndarray of str or None
        ``obs[cell_type_key]`` as strings, when a key was given.
    genes : Index
        Gene symbols (columns of ``X``).
    obs, var : DataFrame
        The input's annotations (not copied: never modify them).
    uns : dict
        The input's ``uns`` (not copied).
    perturbation_key, control_label, cell_type_key, layer : str or None
        The keys the data was prepared with.
    normalization : {"counts", "log1p"}
        What the input matrix held (the one decision, see :func:`prepare`).
    log_base : float or None
        Base of the log1p (``uns['log1p']['base']``; None is natural log).

    Notes
    -----
    Indexing works like an AnnData's rows: ``data[rows]`` (int positions, a
    boolean mask or a slice) is a new object sharing nothing mutable, so
    scikit-learn's cross-validation can index it; :meth:`select_genes` keeps
    columns. Neither re-checks anything.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> data = prepare(make_perturbseq(n_cells=200, n_genes=30, n_perturbations=4, random_state=0))
    >>> data.normalization, data.shape, data.perturbations[:2]
    ('counts', (200, 30), ['G00002', 'G00002+G00025'])
    """

    X: Any
    counts: Any
    labels: np.ndarray
    is_control: np.ndarray
    cell_types: np.ndarray | None
    genes: pd.Index
    obs: pd.DataFrame = field(repr=False)
    var: pd.DataFrame = field(repr=False)
    uns: dict = field(default_factory=dict, repr=False)
    perturbation_key: str = "target_gene"
    control_label: str = "non-targeting"
    cell_type_key: str | None = None
    layer: str | None = None
    normalization: str = "log1p"
    log_base: float | None = None

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.labels), len(self.genes))

    @property
    def n_obs(self) -> int:
        return len(self.labels)

    @property
    def n_vars(self) -> int:
        return len(self.genes)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def obs_names(self) -> pd.Index:
        return self.obs.index

    @property
    def var_names(self) -> pd.Index:
        return self.genes

    @property
    def backed(self) -> bool:
        return isinstance(self.X, BackedRows)

    def __repr__(self) -> str:
        ct = f", cell_type_key={self.cell_type_key!r}" if self.cell_type_key else ""
        return (
            f"PerturbationData({self.n_obs} cells x {self.n_vars} genes, "
            f"{len(self.perturbations)} perturbations, {int(self.is_control.sum())} controls, "
            f"input {self.normalization}{', backed' if self.backed else ''}; "
            f"perturbation_key={self.perturbation_key!r}, "
            f"control_label={self.control_label!r}{ct})"
        )

    # ------------------------------------------------------------------ derived
    @cached_property
    def perturbations(self) -> list[str]:
        """Non-control labels, sorted."""
        return sorted(set(self.labels[~self.is_control].tolist()))

    @cached_property
    def contexts(self) -> np.ndarray:
        """Cell type of each cell, ``"all"`` without a cell-type key."""
        if self.cell_types is None:
            return np.full(self.n_obs, "all")
        return self.cell_types.astype(str)

    @cached_property
    def groups(self) -> CellGroups:
        """Rows of each (label, cell type) group and each cell type's controls."""
        return CellGroups.from_labels(self.labels, self.is_control, self.contexts)

    @cached_property
    def X32(self):
        """:attr:`X` as float32 CSR (or a float32 reader of a backed file)."""
        if isinstance(self.X, BackedRows):
            return self.X.subset(float32=True)
        return sp.csr_matrix(self.X, dtype=np.float32)

    @cached_property
    def library_size(self) -> np.ndarray | None:
        """Total counts per cell over all stored genes (float64); None without counts."""
        if self.counts is None:
            return None
        if isinstance(self.counts, BackedRows):
            return (
                np.concatenate(
                    [
                        np.asarray(block.sum(1), dtype=np.float64).ravel()
                        for _, block in self.counts.chunks()
                    ]
                )
                if self.n_obs
                else np.zeros(0)
            )
        return np.asarray(self.counts.sum(1), dtype=np.float64).ravel()

    # ------------------------------------------------------------------ subsets
    def __getitem__(self, index) -> PerturbationData:
        if isinstance(index, tuple):  # scikit-learn's `X[key, ...]`
            if len(index) != 2 or index[1] is not Ellipsis:
                raise IndexError("PerturbationData supports row indexing only: `data[rows]`.")
            index = index[0]
        rows = np.arange(self.n_obs)[index]
        rows = np.atleast_1d(rows)
        take = _take_rows
        changes = {
            "X": take(self.X, rows),
            "counts": None if self.counts is None else take(self.counts, rows),
            "labels": self.labels[rows],
            "is_control": self.is_control[rows],
            "cell_types": None if self.cell_types is None else self.cell_types[rows],
            "obs": self.obs.iloc[rows],
        }
        out = dataclasses.replace(self, **changes)
        if "library_size" in self.__dict__ and self.library_size is not None:
            out.__dict__["library_size"] = self.library_size[rows]
        return out

    def select_genes(self, genes, *, what: str = "requested genes") -> PerturbationData:
        """The same cells restricted to ``genes`` (in that order); values are unchanged.

        Values were normalised over all genes, so a gene's value does not
        depend on the panel; :attr:`library_size` is kept.
        """
        genes = check_genes(self, genes, what=what)
        cols = self.genes.get_indexer(genes)
        if np.array_equal(cols, np.arange(self.n_vars)):
            return self
        changes = {
            "X": _take_cols(self.X, cols),
            "counts": None if self.counts is None else _take_cols(self.counts, cols),
            "genes": self.genes[cols],
            "var": self.var.iloc[cols],
        }
        out = dataclasses.replace(self, **changes)
        if self.counts is not None:  # totals over all genes, not over the selection
            out.__dict__["library_size"] = self.library_size
        return out

    def relabel(self, labels) -> PerturbationData:
        """The same cells with new perturbation labels (canonicalised; for queries)."""
        labels = canonical_labels(
            np.asarray(labels, dtype=str),
            control_label=self.control_label,
            key=self.perturbation_key,
            genes=self.genes,
        )
        obs = self.obs.copy()
        obs[self.perturbation_key] = pd.Categorical(labels)
        out = dataclasses.replace(
            self, labels=labels, is_control=labels == self.control_label, obs=obs
        )
        if "library_size" in self.__dict__:
            out.__dict__["library_size"] = self.library_size
        return out

    def to_adata(self):
        """A new AnnData: log1p ``X`` (backed: read into memory), ``obs`` and ``var``
        copied, ``layers['counts']`` when counts exist, ``uns['log1p']``."""
        import anndata as ad

        X = self.X.to_csr() if isinstance(self.X, BackedRows) else self.X.copy()
        out = ad.AnnData(X=X, obs=self.obs.copy(), var=self.var.copy())
        if self.counts is not None:
            counts = self.counts
            out.layers["counts"] = (
                counts.to_csr() if isinstance(counts, BackedRows) else counts.copy()
            )
        out.uns["log1p"] = {"base": self.log_base}
        return out


def _take_rows(X, rows):
    if isinstance(X, BackedRows):
        return X.subset(rows=rows)
    return X[rows]


def _take_cols(X, cols):
    if isinstance(X, BackedRows):
        return X.subset(cols=cols)
    return X[:, cols]


# ---------------------------------------------------------------------- prepare
#: The three label keys and their defaults; a key left at its default is "not given".
DEFAULT_KEYS = {
    "perturbation_key": "target_gene",
    "control_label": "non-targeting",
    "cell_type_key": None,
}


def resolve_keys(adata, **keys) -> dict:
    """The label keys to use for ``adata``: those given, else those recorded in ``uns['sktx']``.

    A key left at its default (``DEFAULT_KEYS``) is replaced by the one
    :func:`sktx.datasets.load_h5ad` recorded, so column names are given once.
    A :class:`PerturbationData` answers with its own keys where none is given.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> a = ad.AnnData(np.ones((2, 1)))
    >>> a.uns["sktx"] = {"perturbation_key": "perturbation", "control_label": "control"}
    >>> resolve_keys(a)["perturbation_key"], resolve_keys(a, control_label="ctrl")["control_label"]
    ('perturbation', 'ctrl')
    """
    out = {name: keys.get(name, default) for name, default in DEFAULT_KEYS.items()}
    if isinstance(adata, PerturbationData):
        record = {name: getattr(adata, name) for name in DEFAULT_KEYS}
    else:
        record = getattr(adata, "uns", {}).get("sktx")
    if isinstance(record, dict):
        for name, default in DEFAULT_KEYS.items():
            if out[name] == default and record.get(name) is not None:
                out[name] = record[name]
    return out


def prepare(
    adata,
    *,
    perturbation_key: str | None = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    layer: str | None = None,
    normalize: str = "auto",
    require_control: bool = True,
    require_perturbed: bool = False,
) -> PerturbationData:
    """Check an AnnData once and return the :class:`PerturbationData` every sktx call uses.

    Parameters
    ----------
    adata : AnnData or PerturbationData
        Cells x genes, ``X`` (or ``layer``) dense or CSR, raw counts or log1p;
        may be backed (``anndata.read_h5ad(path, backed="r")``). Never modified.
        A :class:`PerturbationData` is returned as it is (after checking that
        its keys are these).
    perturbation_key : str or None, default="target_gene"
        ``obs`` column naming each cell's perturbation (``"A+B"`` for combinations).
        ``None``: unlabeled cells (e.g. for gene selection), all taken as controls.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        ``obs`` column with the cell type (context) of each cell.

        Each of the three keys left at its default is read from ``uns['sktx']``
        when :func:`sktx.datasets.load_h5ad` recorded it there (see
        :func:`resolve_keys`), so the column names are given once.
    layer : str, optional
        Read expression from this layer instead of ``X`` (not for backed files).
    normalize : {"auto", "counts", "log1p"}, default="auto"
        What the matrix holds. ``"counts"``: library-size normalise (target
        sum 1e4, :func:`scanpy.pp.normalize_total`) and ``log1p`` over all
        genes. ``"log1p"``: use as it is. ``"auto"``: a record left by
        :func:`sktx.datasets.load_h5ad` (``uns['sktx']['x_is_log1p']``) decides;
        else integer values are counts and non-integer values with
        ``uns['log1p']`` or below the log1p range are log1p. Ambiguous input
        is refused with the fix: integer values carrying ``uns['log1p']``,
        non-integer values far above the log1p range (e.g. scaled counts).
    require_control : bool, default=True
        Refuse data without control cells (a query may have none).
    require_perturbed : bool, default=False
        Refuse data in which every cell is a control.

    Returns
    -------
    PerturbationData

    Raises
    ------
    DataContractError
        For anything the data contract refuses (see docs/errors.md), a
        malformed label (``"A+"``, ``"A+A"``), duplicate CSR entries, or an
        ambiguous counts/log1p input under ``normalize="auto"``.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=200, n_genes=30, n_perturbations=4, random_state=0)
    >>> data = prepare(adata)
    >>> data.normalization, data.counts is not None, round(float(data.X.max()), 2)
    ('counts', True, 8.65)
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"`normalize` must be one of {NORMALIZE}, got {normalize!r}.")
    keys = resolve_keys(
        adata,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
    )
    perturbation_key, control_label, cell_type_key = keys.values()
    if isinstance(adata, PerturbationData):
        return _check_prepared(
            adata,
            **keys,
            layer=layer,
            require_control=require_control,
            require_perturbed=require_perturbed,
        )
    _BUILDS["prepare"] += 1
    backed = is_backed(adata)
    if backed and layer is not None:
        raise DataContractError(
            f"`layer={layer!r}` cannot be used with a backed AnnData: sktx streams only the "
            "on-disk `X`. Pass `layer=None` (write the layer as `X` of its own h5ad file), "
            "or load the data into memory (`adata.to_memory()`)."
        )
    info, stats = validate(
        adata,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        layer=layer,
        require_control=False,
        require_perturbed=False,
    )
    genes = pd.Index(adata.var_names.astype(str))
    control = control_label.strip()
    if info is None:  # perturbation_key=None: unlabeled cells, all taken as the basal state
        labels = np.full(adata.n_obs, control, dtype=object).astype(str)
        types = None if cell_type_key is None else adata.obs[cell_type_key].astype(str).to_numpy()
    else:
        labels = canonical_labels(
            info.labels, control_label=control_label, key=perturbation_key, genes=genes
        )
        types = info.cell_types
    is_control = labels == control
    require_cells(
        labels, is_control, perturbation_key, control_label, require_control, require_perturbed
    )
    matrix = None if backed else get_matrix(adata, layer)
    if matrix is not None and sp.issparse(matrix):
        _refuse_duplicates(matrix, layer)
    kind = _decide(adata, stats, layer, normalize)
    log_base = None
    if kind == "log1p":
        meta = adata.uns.get("log1p")
        log_base = meta.get("base") if isinstance(meta, dict) else None
    if backed:
        counts = BackedRows(adata, normalize=False, float32=False) if kind == "counts" else None
        X = BackedRows(adata, normalize=kind == "counts", float32=False)
    elif kind == "counts":
        counts, X = matrix, _log1p(matrix)
    else:
        counts, X = _counts_layer(adata, layer), matrix
    return PerturbationData(
        X=X,
        counts=counts,
        labels=labels,
        is_control=is_control,
        cell_types=types,
        genes=genes,
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        perturbation_key=perturbation_key,
        control_label=control,
        cell_type_key=cell_type_key,
        layer=layer,
        normalization=kind,
        log_base=log_base,
    )


def _check_prepared(data: PerturbationData, *, require_control, require_perturbed, **keys):
    for name, value in keys.items():
        have = getattr(data, name)
        if have != value:
            raise DataContractError(
                f"this PerturbationData was prepared with `{name}={have!r}` but is used with "
                f"`{name}={value!r}`. Pass the same keys to the estimator (or prepare the "
                "AnnData again with these keys)."
            )
    require_cells(
        data.labels,
        data.is_control,
        data.perturbation_key,
        data.control_label,
        require_control,
        require_perturbed,
    )
    return data


def _refuse_duplicates(X, layer) -> None:
    """CSR with a (row, gene) stored twice: scipy sums them, anndata keeps both; refuse."""
    csr = sp.csr_matrix(X)
    if csr.has_canonical_format:
        return
    fixed = csr.copy()
    fixed.sum_duplicates()
    if fixed.nnz != csr.nnz:
        where = "`X`" if layer is None else f"`layers[{layer!r}]`"
        raise DataContractError(
            f"{where} is a sparse matrix with {csr.nnz - fixed.nnz} duplicate entries (one "
            "cell and gene stored more than once), so its values are ambiguous. Sum them on "
            "a copy first: `X = adata.X.copy(); X.sum_duplicates(); adata.X = X`."
        )


def _decide(adata, stats: ValueStats | None, layer, normalize) -> str:
    """The one counts-vs-log1p decision (see :func:`prepare`)."""
    _BUILDS["normalize_decisions"] += 1
    if normalize != "auto":
        return normalize
    record = adata.uns.get("sktx")
    if layer is None and isinstance(record, dict) and "x_is_log1p" in record:
        return "log1p" if record["x_is_log1p"] else "counts"
    # scanpy's `uns['log1p']` describes X; a layer is decided by its values
    has_marker = layer is None and "log1p" in adata.uns
    where = "`X`" if layer is None else f"`layers[{layer!r}]`"
    if stats is None or stats.vmax == 0:
        return "log1p" if has_marker else "counts"
    if has_marker and stats.integer:
        raise DataContractError(
            f"{where} holds whole numbers only (max {stats.vmax:.6g}), like raw counts, but "
            "`uns['log1p']` says it is log1p-normalised. Say which it is: "
            "`normalize='counts'` (the marker is stale) or `normalize='log1p'`."
        )
    if has_marker or stats.integer:
        return "log1p" if has_marker else "counts"
    if stats.vmax > _LOG1P_MAX:
        raise DataContractError(
            f"{where} holds non-integer values up to {stats.vmax:.6g}, far above the log1p "
            f"range (log1p of normalised counts stays below ~15), and no `uns['log1p']`: "
            "neither raw counts nor log1p. If these are (e.g. ambient-corrected or scaled) "
            "counts, pass `normalize='counts'`; if they are normalised but not logged, apply "
            "`sc.pp.log1p` first; if they are log1p values, pass `normalize='log1p'`."
        )
    return "log1p"


def _log1p(counts):
    """Library-size normalise and log1p a copy of ``counts`` (scanpy, target sum 1e4)."""
    import anndata as ad

    tmp = ad.AnnData(X=counts.copy())
    log_normalize_inplace(tmp, TARGET_SUM, keep_counts=False)
    return tmp.X


def _counts_layer(adata, layer):
    """``layers['counts']`` beside log1p ``X`` (as :func:`sktx.log_normalize` leaves it)."""
    if layer is not None or "counts" not in adata.layers:
        return None
    counts = get_matrix(adata, "counts")
    if counts.shape != adata.shape:
        return None
    head = counts[: min(2000, counts.shape[0])]
    values = head.data if sp.issparse(head) else np.asarray(head).ravel()
    if values.size and (values.min() < 0 or not np.allclose(values, np.round(values))):
        return None  # not counts after all; keep log1p only
    return counts
