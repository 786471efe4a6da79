"""The data contract: one set of checks used by every sktx estimator.

Every public entry point that receives an :class:`~anndata.AnnData` calls
:func:`validate_adata` first.  The checks never modify the caller's object; a
failed check raises :class:`DataContractError` whose message names the
offending key, gene or value and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.data._backed import BackedRows, check_backed_values
from sktx.data._errors import DataContractError
from sktx.data._errors import fmt_items as _fmt
from sktx.data._normalize import TARGET_SUM, log_normalize_inplace
from sktx.data._values import ValueStats, check_finite_nonnegative

__all__ = [
    "DataContractError",
    "PerturbationInfo",
    "check_genes",
    "get_matrix",
    "is_log_normalized",
    "log_normalize",
    "validate_adata",
]

_DEFAULT_KEY = "target_gene"
_DEFAULT_CONTROL = "non-targeting"
# Rows scanned when guessing counts vs log1p; enough to be sure, cheap on 1e6 cells.
_SNIFF_ROWS = 2000


@dataclass(frozen=True)
class PerturbationInfo:
    """What :func:`validate_adata` learned about the perturbation labels.

    Attributes
    ----------
    labels : ndarray of str, shape (n_obs,)
        Perturbation label of each cell (combinations joined with ``+``).
    is_control : ndarray of bool, shape (n_obs,)
        True for control cells.
    perturbations : list of str
        Non-control labels, sorted.
    cell_types : ndarray of str or None
        ``obs[cell_type_key]`` as strings when a key was given.
    """

    labels: np.ndarray
    is_control: np.ndarray
    perturbations: list[str]
    cell_types: np.ndarray | None


def _columns_holding(obs: pd.DataFrame, value: str) -> list[str]:
    """``obs`` columns in which some cell has the label ``value`` (for hints)."""
    found = []
    for name, col in obs.items():
        if isinstance(col.dtype, pd.CategoricalDtype):
            if value in col.cat.categories:
                found.append(str(name))
        elif col.dtype == object and (col == value).any():
            found.append(str(name))
    return found


def _check_labels(
    adata, key: str, role: str, param: str, control_label: str | None = None
) -> np.ndarray:
    if key not in adata.obs.columns:
        hint = ""
        if control_label is not None:
            guesses = _columns_holding(adata.obs, control_label)
            # Columns named like a perturbation column are the likelier answer.
            guesses.sort(key=lambda c: not any(w in c.lower() for w in ("pert", "target")))
            if guesses:
                hint = (
                    f" Columns holding the control label {control_label!r}: {_fmt(guesses)} "
                    f"(e.g. `{param}={guesses[0]!r}`)."
                )
        raise DataContractError(
            f"`obs[{key!r}]` not found; available columns: {_fmt(adata.obs.columns, 20)}. "
            f"Pass `{param}=` naming the column that holds the {role}.{hint}"
        )
    col = adata.obs[key]
    if col.isna().any():
        bad = col.index[col.isna().to_numpy()][:5].tolist()
        raise DataContractError(
            f"`obs[{key!r}]` has {int(col.isna().sum())} missing values (e.g. cells "
            f"{_fmt(bad)}). Every cell needs a {role} label; fill or drop those cells."
        )
    # Categoricals are checked on their categories: one pass over the few labels.
    pool = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else col
    if pd.api.types.infer_dtype(pool, skipna=False) != "string":
        bad = next(v for v in pool if not isinstance(v, str))
        raise DataContractError(
            f"`obs[{key!r}]` must hold strings, found {type(bad).__name__} values such "
            f"as {bad!r}. Convert with `adata.obs[{key!r}] = "
            f"adata.obs[{key!r}].astype(str)` (on a copy if the original must stay as it is)."
        )
    return col.astype(object).to_numpy().astype(str)


def get_matrix(adata, layer: str | None = None):
    """Return the expression matrix (``X`` or a layer), keeping sparse sparse.

    Parameters
    ----------
    adata : AnnData
        Cells x genes.
    layer : str, optional
        Layer to read instead of ``X``.

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix
        Dense arrays are returned as they are; sparse matrices as CSR. The
        caller's data are not copied unless a format conversion is needed.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> get_matrix(ad.AnnData(np.ones((2, 3)))).shape
    (2, 3)
    """
    if layer is None:
        X = adata.X
    else:
        if layer not in adata.layers:
            raise DataContractError(
                f"layer {layer!r} not found; available layers: {_fmt(adata.layers.keys())}. "
                "Pass `layer=None` to use `X`."
            )
        X = adata.layers[layer]
    if X is None:
        raise DataContractError("`adata.X` is None; pass `layer=` naming the expression matrix.")
    if hasattr(X, "to_memory"):  # backed sparse dataset: loads it (streaming code uses BackedRows)
        X = X.to_memory()
    if sp.issparse(X):
        return X if sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array) else sp.csr_matrix(X)
    return np.asarray(X)


def validate_adata(
    adata,
    *,
    perturbation_key: str | None = _DEFAULT_KEY,
    control_label: str = _DEFAULT_CONTROL,
    cell_type_key: str | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    require_control: bool = True,
    require_perturbed: bool = False,
    check_values: bool = True,
) -> PerturbationInfo | None:
    """Check that ``adata`` follows the sktx data contract.

    :func:`sktx.prepare` runs these checks once and keeps what they found;
    call this directly only to check an AnnData without preparing it.

    Parameters
    ----------
    adata : AnnData
        Cells x genes; ``X`` (or ``layer``) dense or CSR, raw counts or log1p.
    perturbation_key : str or None, default="target_gene"
        ``obs`` column naming each cell's perturbation (``"A+B"`` for
        combinations). ``None`` checks only the matrix and gene names.
    control_label : str, default="non-targeting"
        Label of control cells in ``obs[perturbation_key]``.
    cell_type_key, batch_key : str, optional
        Optional ``obs`` columns giving context; checked like the labels.
    layer : str, optional
        Check this layer instead of ``X``.
    require_control : bool, default=True
        Raise when no cell carries ``control_label``.
    require_perturbed : bool, default=False
        Raise when every cell is a control.
    check_values : bool, default=True
        Scan the matrix for NaN/inf and negative values.

    Returns
    -------
    PerturbationInfo or None
        Parsed labels, or ``None`` when ``perturbation_key`` is None.

    Raises
    ------
    DataContractError
        With a message naming the problem and its fix.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> obs = pd.DataFrame({"target_gene": ["non-targeting", "GATA1"]}, index=["c1", "c2"])
    >>> info = validate_adata(ad.AnnData(np.ones((2, 3)), obs=obs))
    >>> info.perturbations
    ['GATA1']
    """
    info, _ = validate(
        adata,
        perturbation_key=perturbation_key,
        control_label=control_label,
        cell_type_key=cell_type_key,
        batch_key=batch_key,
        layer=layer,
        require_control=require_control,
        require_perturbed=require_perturbed,
        check_values=check_values,
    )
    return info


def validate(
    adata,
    *,
    perturbation_key: str | None = _DEFAULT_KEY,
    control_label: str = _DEFAULT_CONTROL,
    cell_type_key: str | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    require_control: bool = True,
    require_perturbed: bool = False,
    check_values: bool = True,
) -> tuple[PerturbationInfo | None, ValueStats | None]:
    """:func:`validate_adata` that also returns what the value scan saw (``None`` unscanned)."""
    import anndata as ad

    if not isinstance(adata, ad.AnnData):
        raise TypeError(
            f"expected an AnnData (cells x genes), got {type(adata).__name__}. Build one with "
            "`anndata.AnnData(X, obs=obs, var=var)` or read it with `sktx.datasets.load_h5ad`."
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataContractError(
            f"AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "sktx needs at least one cell and one gene. Check earlier filtering steps."
        )
    names = pd.Index(adata.var_names)
    if names.has_duplicates:
        dups = names[names.duplicated()].unique().tolist()
        raise DataContractError(
            f"`var_names` has {len(dups)} duplicated gene names: {_fmt(dups)}. Make them unique "
            "(`adata.var_names_make_unique()`) or aggregate the duplicates before fitting."
        )
    stats = None
    if check_values:
        where = "`X`" if layer is None else f"`layers[{layer!r}]`"
        if layer is None and adata.isbacked:
            # chunk by chunk: a backed matrix is never loaded whole
            stats = check_backed_values(adata, where)
        else:
            stats = check_finite_nonnegative(get_matrix(adata, layer), where, adata.obs_names)
    for key, param in ((cell_type_key, "cell_type_key"), (batch_key, "batch_key")):
        if key is not None:
            _check_labels(adata, key, param.removesuffix("_key").replace("_", " "), param)
    if perturbation_key is None:
        return None, stats

    labels = _check_labels(
        adata, perturbation_key, "perturbation", "perturbation_key", control_label
    )
    is_control = labels == control_label
    require_cells(
        labels, is_control, perturbation_key, control_label, require_control, require_perturbed
    )
    perts = sorted(set(labels[~is_control].tolist()))
    cell_types = None
    if cell_type_key is not None:
        cell_types = adata.obs[cell_type_key].astype(str).to_numpy()
    return PerturbationInfo(labels, is_control, perts, cell_types), stats


def require_cells(labels, is_control, key, control_label, require_control, require_perturbed):
    """Refuse data without control cells, or with nothing but controls, when asked to."""
    if require_control and not is_control.any():
        counts = pd.Series(labels).value_counts()
        common = [f"{lab!r} ({n} cells)" for lab, n in counts.head(5).items()]
        raise DataContractError(
            f"no control cells: no cell has `obs[{key!r}] == {control_label!r}`. "
            f"Most frequent labels: {', '.join(common)}. Pass `control_label=` naming the "
            "label of your control cells (e.g. 'control', 'ctrl', 'non-targeting')."
        )
    if require_perturbed and is_control.all():
        raise DataContractError(
            f"every cell is a control: all {len(labels)} cells have "
            f"`obs[{key!r}] == {control_label!r}`. At least one perturbation with "
            "cells is needed; check `control_label=` and `perturbation_key=`, or add the "
            "perturbed cells."
        )


def check_genes(adata, genes: Iterable[str], *, what: str = "requested genes") -> list[str]:
    """Raise when any of ``genes`` is not in ``adata.var_names``.

    Parameters
    ----------
    adata : AnnData
        The data the genes must be in.
    genes : iterable of str
        Gene symbols.
    what : str
        How to describe the genes in the message.

    Returns
    -------
    list of str
        ``genes`` as a list, in order.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> a = ad.AnnData(np.ones((1, 2)), var=pd.DataFrame(index=["A", "B"]))
    >>> check_genes(a, ["B"])
    ['B']
    """
    genes = list(genes)
    present = set(adata.var_names)
    missing = [g for g in genes if g not in present]
    if missing:
        raise DataContractError(
            f"{len(missing)} {what} are not in `var_names`: {_fmt(missing)}. "
            f"The data has {adata.n_vars} genes (e.g. {_fmt(adata.var_names[:5])}); "
            "check the symbols (aliases such as OCT4 -> POU5F1 are resolved by "
            "`sktx.genesets.resolve_aliases`) or fit on data that measures them."
        )
    return genes


def is_log_normalized(adata, *, layer: str | None = None) -> bool:
    """Guess whether the matrix holds log1p-normalised values rather than counts.

    Counts are integer-valued; log1p of library-size-normalised data is not.
    ``uns['log1p']`` (written by :func:`scanpy.pp.log1p`) settles it.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> is_log_normalized(ad.AnnData(np.array([[0.0, 3.0], [1.0, 7.0]])))
    False
    """
    if "log1p" in adata.uns:
        return True
    if adata.isbacked and layer is None:
        # Read only the first rows (of a view too): a backed file is never loaded whole.
        reader = BackedRows(adata, normalize=False, float32=False)
        rows = reader.raw_rows(np.arange(min(_SNIFF_ROWS, adata.n_obs)))
    else:
        X = get_matrix(adata, layer)
        rows = X[: min(_SNIFF_ROWS, X.shape[0])]
    data = rows.data if sp.issparse(rows) else np.asarray(rows).ravel()
    data = data[data != 0]
    if data.size == 0:
        return False
    return not np.allclose(data, np.round(data))


def log_normalize(
    adata, *, target_sum: float = TARGET_SUM, layer: str | None = None, force: bool = False
):
    """Return a log1p-normalised copy of ``adata`` (the input is not modified).

    Uses :func:`scanpy.pp.normalize_total` then :func:`scanpy.pp.log1p`. If the
    data already look log-normalised (see :func:`is_log_normalized`) the copy
    is returned unchanged, unless ``force=True``.

    Parameters
    ----------
    adata : AnnData
        Raw counts or log1p values.
    target_sum : float, default=1e4
        Counts per cell after normalisation (fixed, so train and test match).
    layer : str, optional
        Read counts from this layer; the result is in ``X``.
    force : bool, default=False
        Normalise even when the matrix does not look like counts (e.g.
        non-integer ambient-corrected counts).

    Returns
    -------
    AnnData
        A new object; ``uns['log1p']`` is set and ``layers['counts']`` keeps
        the raw counts when normalisation happened.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> out = log_normalize(ad.AnnData(np.array([[1.0, 3.0], [2.0, 2.0]])))
    >>> bool(out.X.max() < 10)
    True
    """
    out = adata.copy()
    if layer is not None:
        out.X = get_matrix(adata, layer).copy()
    if not force and is_log_normalized(out):
        return out
    log_normalize_inplace(out, target_sum)
    return out


def backed_rows(adata, *, layer: str | None = None, float32: bool = True) -> BackedRows:
    """A :class:`BackedRows` reader of ``adata``, normalising raw counts.

    Raises
    ------
    DataContractError
        When ``layer`` is given: only the backed ``X`` is streamed.
    """
    if layer is not None:
        raise DataContractError(
            f"`layer={layer!r}` cannot be used with a backed AnnData: sktx streams only the "
            "on-disk `X`. Pass `layer=None` (write the layer as `X` of its own h5ad file), "
            "or load the data into memory (`adata.to_memory()`)."
        )
    return BackedRows(adata, normalize=not is_log_normalized(adata), float32=float32)
