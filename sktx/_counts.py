"""Counts out: turn a log1p prediction into raw integer counts (the 2026 submission format).

Every ``predict(query, output=..., all_genes=...)`` of sktx (the regressor, every
baseline, :class:`~sktx.ProgressiveFit`) ends in :func:`prediction_output`, so the
count model below is defined once.

The count model
---------------
For query cell ``c`` (a control cell, relabelled) with library size ``s_c`` (its total
counts over all stored genes, :attr:`sktx.PerturbationData.library_size`) and a
predicted log1p value ``x_cg`` of gene ``g``, the expected count is

    mu_cg = expm1(x_cg) / TARGET_SUM * s_c          (TARGET_SUM = 1e4)

so the library-size-normalised mean of the sampled counts is the prediction, and the
depth follows the query cell (a predicted value above ``log1p(TARGET_SUM)``, a gene
holding more than the whole library, is capped there). Counts are negative binomial,
``Var(y_cg) = mu_cg + phi_g * mu_cg**2``, drawn as a gamma-Poisson mixture. The per-gene
dispersion ``phi_g`` is a method-of-moments estimate on the query's own counts of the same
context (the query cells *are* control cells), with size factors: with
``p_g = sum_c y_cg / sum_c s_c`` and ``m_cg = s_c * p_g``,

    phi_g = max(0, sum_c [(y_cg - m_cg)**2 - m_cg] / sum_c m_cg**2),

a gene with no over-dispersion (``phi_g = 0``, a gene never seen, or a context of fewer
than two cells) is Poisson. Cells labelled ``control_label`` keep their own counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils import check_random_state

from sktx.data import DataContractError
from sktx.data._normalize import TARGET_SUM

__all__ = ["OUTPUTS", "expected_counts", "nb_dispersion", "prediction_output", "sample_counts"]

#: Accepted values of ``predict(..., output=)``.
OUTPUTS = ("log1p", "counts")
# Rows sampled at a time: bounds the dense (rows x genes) means of a large query.
_CHUNK = 2048


def nb_dispersion(counts, library_size) -> np.ndarray:
    """Per-gene negative-binomial dispersion of counts, by the method of moments.

    Parameters
    ----------
    counts : ndarray or sparse matrix of shape (n_cells, n_genes)
        Raw counts of control cells.
    library_size : array-like of shape (n_cells,)
        Each cell's total counts (over all genes, not only these columns).

    Returns
    -------
    ndarray of shape (n_genes,)
        ``phi_g >= 0`` with ``Var = mu + phi * mu**2``; 0 means Poisson.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = rng.gamma(shape=2.0, scale=5.0, size=(4000, 1))  # phi = 1 / shape = 0.5
    >>> y = rng.poisson(np.hstack([lam, np.full((4000, 1), 10.0)]))
    >>> np.round(nb_dispersion(y, np.full(4000, 1000.0)), 1)
    array([0.5, 0. ])
    """
    s = np.asarray(library_size, dtype=np.float64).ravel()
    n_genes = counts.shape[1]
    if s.size < 2 or s.sum() <= 0:
        return np.zeros(n_genes)
    Y = sp.csr_matrix(counts, dtype=np.float64)
    # all sums of squares expanded, so a sparse matrix is never densified
    y_sum = np.asarray(Y.sum(0)).ravel()
    y_sq = np.asarray(Y.multiply(Y).sum(0)).ravel()
    sy = np.asarray(Y.T @ s).ravel()
    s1, s2 = s.sum(), np.square(s).sum()
    p = y_sum / s1
    resid = y_sq - 2.0 * p * sy + p * p * s2 - p * s1
    denom = p * p * s2
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(denom > 0, resid / denom, 0.0)
    return np.clip(np.nan_to_num(phi, nan=0.0, posinf=0.0), 0.0, None)


def expected_counts(log1p, library_size, *, log_base: float | None = None) -> np.ndarray:
    """Means of the count model: ``expm1(log1p) / TARGET_SUM * library_size`` per cell.

    Parameters
    ----------
    log1p : ndarray of shape (n_cells, n_genes)
        Predicted log1p expression (sktx's normalisation: 1e4 counts per cell).
    library_size : array-like of shape (n_cells,)
    log_base : float, optional
        Base of the log (``uns['log1p']['base']``); None is the natural log.

    Returns
    -------
    ndarray of shape (n_cells, n_genes), float64

    Examples
    --------
    >>> import numpy as np
    >>> expected_counts(np.log1p([[9.0, 0.0]]), [2e4]).round(6)
    array([[18.,  0.]])
    """
    # one gene cannot hold more than the whole (normalised) library
    cap = np.log1p(TARGET_SUM) if log_base is None else np.log(TARGET_SUM + 1) / np.log(log_base)
    x = np.clip(np.asarray(log1p, dtype=np.float64), 0.0, cap)
    norm = np.expm1(x) if log_base is None else np.power(float(log_base), x) - 1.0
    s = np.asarray(library_size, dtype=np.float64).reshape(-1, 1)
    return norm / TARGET_SUM * s


def sample_counts(mu: np.ndarray, phi: np.ndarray, rng) -> np.ndarray:
    """Negative-binomial counts with means ``mu`` and per-gene dispersions ``phi``.

    Parameters
    ----------
    mu : ndarray of shape (n_cells, n_genes)
    phi : ndarray of shape (n_genes,)
        0 draws Poisson counts for that gene.
    rng : numpy.random.RandomState

    Returns
    -------
    ndarray of shape (n_cells, n_genes), float64 holding whole numbers

    Examples
    --------
    >>> import numpy as np
    >>> y = sample_counts(np.full((2000, 2), 4.0), np.array([0.0, 1.0]), np.random.RandomState(0))
    >>> bool(abs(y[:, 0].var() - 4) < 0.5), bool(abs(y[:, 1].var() - 20) < 3)
    (True, True)
    """
    mu = np.clip(mu, 0.0, None)
    lam = mu.copy()
    over = np.flatnonzero(phi > 0)
    if over.size:
        shape = 1.0 / phi[over]
        # gamma-Poisson: lambda ~ Gamma(1/phi, mu*phi), so E = mu and Var = mu + phi*mu^2
        lam[:, over] = rng.gamma(shape[None, :], 1.0, size=(mu.shape[0], over.size)) * (
            mu[:, over] / shape[None, :]
        )
    return rng.poisson(lam).astype(np.float64)


def _check_output(output) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"`output` must be one of {OUTPUTS}, got {output!r}.")


def _rows(X, rows, cols=None) -> sp.csr_matrix:
    """Rows (and columns) of a matrix, dense, CSR or backed, as CSR float64."""
    block = sp.csr_matrix(X[rows], dtype=np.float64)  # BackedRows reads rows the same way
    return block if cols is None else block[:, cols]


def _check_counts_query(query) -> None:
    if query.counts is None:
        raise DataContractError(
            "`output='counts'` needs the query's raw counts (each cell's library size sets "
            "the depth of its sampled counts), but the query holds log1p values only. Pass "
            "query cells with raw counts: counts in `X`, or `layers['counts']` beside log1p "
            "`X` (as `sktx.log_normalize` and `make_query` on a counts file leave them)."
        )
    if query.normalization == "log1p" and query.n_obs:
        # the count model assumes sktx's normalisation (TARGET_SUM counts per cell)
        head = _rows(query.X, np.arange(min(query.n_obs, 200)))
        head.data = np.expm1(head.data)
        totals = np.asarray(head.sum(1)).ravel()
        ratio = float(np.median(totals)) / TARGET_SUM
        if query.n_vars and not 0.99 <= ratio <= 1.01:
            raise DataContractError(
                f"`output='counts'` maps log1p values back to counts assuming "
                f"{TARGET_SUM:.0f} counts per cell, but the query's log1p `X` sums to a "
                f"median of {ratio * TARGET_SUM:.6g} per cell (another normalisation, or a "
                "gene subset). Pass the raw counts as `X` so sktx normalises them itself."
            )


def context_dispersions(query, cols) -> dict:
    """Per-gene dispersion (:func:`nb_dispersion`) of each context of ``query``, genes ``cols``.

    ``query`` is a prepared :class:`~sktx.PerturbationData` with counts.
    """
    out = {}
    for ct in np.unique(query.contexts):
        rows = np.flatnonzero(query.contexts == ct)
        out[ct] = nb_dispersion(_rows(query.counts, rows, cols), query.library_size[rows])
    return out


def with_all_genes(X, query, source, cols) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Widen ``X`` (the query's genes ``cols``) to the query's whole gene axis, in its order.

    Genes outside ``cols`` carry the query cells' own values from ``source`` (its
    counts or log1p matrix); returns the CSR matrix and the query's ``var``.
    """
    rest = np.setdiff1d(np.arange(len(query.genes)), cols)
    carried = _rows(source, np.arange(X.shape[0]), rest).astype(np.float32)
    order = np.argsort(np.concatenate([cols, rest]), kind="stable")
    X = sp.hstack([X, carried], format="csr")[:, order]
    var = query.var.copy()
    var.index = pd.Index(query.genes, name=query.var.index.name)
    return X, var


def _counts_block(pred_block, query, rows, cols, phi, rng) -> sp.csr_matrix:
    lib = query.library_size[rows]
    mu = expected_counts(pred_block, lib, log_base=None)
    y = sample_counts(mu, phi, rng)
    ctrl = np.flatnonzero(query.is_control[rows])
    if ctrl.size:  # control cells are returned unchanged
        y[ctrl] = _rows(query.counts, rows[ctrl], cols).toarray()
    return sp.csr_matrix(y.astype(np.float32))


def prediction_output(
    pred, query, *, output: str = "log1p", all_genes: bool = False, random_state=None
):
    """Finish a prediction: log1p as predicted, or raw counts; panel or whole gene axis.

    The one place every ``predict(..., output=, all_genes=)`` of sktx ends.

    Parameters
    ----------
    pred : AnnData
        log1p prediction, one row per query cell (in order), the model's genes as var.
    query : PerturbationData
        The prepared query the prediction was made from.
    output : {"log1p", "counts"}, default="log1p"
        ``"counts"``: integer counts sampled from the count model (module docstring),
        CSR float32.
    all_genes : bool, default=False
        Return the query's whole gene axis in its order; genes the model does not
        predict are the query cells' own (control) values.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampled counts.

    Returns
    -------
    AnnData
        ``obs`` as ``pred``; var the model's genes (or the query's, ``all_genes=True``).
        Counts carry ``uns['sktx'] = {'x_is_log1p': False, 'count_model': ...}``.

    Examples
    --------
    >>> import sktx
    >>> from sktx.baselines import MeanBaseline
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> query = sktx.make_query(adata)
    >>> out = MeanBaseline().fit(adata).predict(query, output="counts", random_state=0)
    >>> out.X.format, bool((out.X.data == out.X.data.round()).all())
    ('csr', True)
    """
    import anndata as ad

    _check_output(output)
    if output == "log1p" and not all_genes:
        return pred
    panel = pd.Index(pred.var_names.astype(str))
    n_cells = pred.n_obs
    cols = query.genes.get_indexer(panel)
    if (cols < 0).any():
        raise DataContractError(
            f"the prediction has genes the query does not hold (e.g. "
            f"{list(panel[cols < 0][:5])}); predict from a query with the model's genes."
        )
    pred_X = pred.X
    blocks = []
    if output == "counts":
        _check_counts_query(query)
        rng = check_random_state(random_state)
        phi_by_context = context_dispersions(query, cols)
        for start in range(0, n_cells, _CHUNK):
            rows = np.arange(start, min(start + _CHUNK, n_cells))
            block = pred_X[rows]
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            out = np.zeros((rows.size, len(panel)), dtype=np.float32)
            contexts = query.contexts[rows]
            for ct in np.unique(contexts):
                sub = np.flatnonzero(contexts == ct)
                out[sub] = _counts_block(
                    block[sub], query, rows[sub], cols, phi_by_context[ct], rng
                ).toarray()
            blocks.append(sp.csr_matrix(out))
        X = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, len(panel)))
        source = query.counts
    else:
        X = sp.csr_matrix(pred_X, dtype=np.float32)
        source = query.X
    if all_genes:
        X, var = with_all_genes(X, query, source, cols)
    else:
        var = pred.var.copy()
    if output == "counts":
        X.sort_indices()
        X.eliminate_zeros()
    else:
        X = X.toarray()
    out = ad.AnnData(X=X, obs=pred.obs.copy(), var=var)
    if output == "counts":
        out.uns["sktx"] = {
            "x_is_log1p": False,
            "count_model": "negative binomial, per-gene method-of-moments dispersion on the "
            "query's counts per context; mean expm1(log1p) / 1e4 * library size",
        }
    else:
        out.uns["log1p"] = {"base": None}
    return out


_KEYS = ("perturbation_key", "control_label", "cell_type_key", "layer")


def model_keys(model) -> dict:
    """The data keys a model (or a step of a pipeline) was built with."""
    try:
        params = model.get_params(deep=True)
    except (AttributeError, TypeError):
        return {}
    keys = {}
    for key in _KEYS:
        hits = [v for k, v in params.items() if k == key or k.endswith("__" + key)]
        if hits:
            keys[key] = hits[-1]
    return keys


def predict_output(
    model, query, *, output: str = "log1p", all_genes: bool = False, random_state=None, **params
):
    """``model.predict(query)`` finished by :func:`prediction_output`, for any sktx model.

    For models whose own ``predict`` cannot see the whole query (a ``Pipeline`` whose
    ``GeneSelector`` cuts the genes first, :class:`~sktx.ProgressiveFit`): the query
    is prepared once with the model's keys, predicted as log1p, then turned into
    counts and/or the whole gene axis here.

    Parameters
    ----------
    model : fitted estimator
        ``predict(query) -> AnnData`` of log1p values.
    query : AnnData or PerturbationData
        Query cells (control cells relabelled).
    output, all_genes, random_state
        As in :func:`prediction_output`.
    **params
        Passed to ``model.predict``.

    Returns
    -------
    AnnData

    Examples
    --------
    >>> import sktx
    >>> from sklearn.pipeline import Pipeline
    >>> from sktx.baselines import MeanBaseline
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = Pipeline([("select", sktx.GeneSelector(n_genes=20)), ("model", MeanBaseline())])
    >>> out = predict_output(model.fit(adata), sktx.make_query(adata), output="counts",
    ...                      all_genes=True, random_state=0)
    >>> out.n_vars
    40
    """
    from sktx.data import prepare

    _check_output(output)
    keys = model_keys(model)
    data = prepare(query, **keys, require_control=False) if "perturbation_key" in keys else query
    pred = model.predict(data, **params)
    return prediction_output(
        pred, data, output=output, all_genes=all_genes, random_state=random_state
    )
