"""``predict_perturbations``: a fitted model, control cells and a list of perturbations in,
an AnnData of predicted cells out (the GEARS-style call, for any sktx model or Pipeline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils import check_random_state

from sktx.context import unseen_context_basal, unseen_control_means
from sktx.data import DataContractError, PerturbationData, prepare, validate_adata
from sktx.data._object import DEFAULT_KEYS, resolve_keys

__all__ = ["predict_perturbations"]

# Values (cells x genes) predicted per chunk when `chunk_size` is None: 2**26 float32
# values are 256 MB per dense copy of a chunk (~3,700 cells at 18,080 genes).
_CHUNK_VALUES = 2**26
# Rows sampled at a time within a perturbation: bounds the float64 means.
_SAMPLE_ROWS = 2048


def predict_perturbations(
    model,
    controls,
    perturbations: Sequence[str] | None = None,
    *,
    n_cells: int | Mapping[str, int] | None = None,
    with_controls: bool = False,
    output: str = "log1p",
    all_genes: bool = False,
    random_state=0,
    chunk_size: int | None = None,
    **keys,
):
    """Predict cells under each perturbation from control cells, with any fitted sktx model.

    The GEARS-style convenience: ``predict_perturbations(model, adata, ["A", "A+B"])``
    builds the query (:func:`sktx.model_selection.make_query`: control cells relabelled
    with each perturbation), predicts it and returns an AnnData for scanpy.

    Parameters
    ----------
    model : fitted estimator
        A :class:`~sktx.PerturbationRegressor`, :class:`~sktx.ProgressiveFit`, baseline or
        a ``Pipeline`` ending in one.
    controls : AnnData or PerturbationData
        Cells holding the controls to start from (other cells are ignored), with the
        model's genes; counts or log1p.
    perturbations : sequence of str, optional
        Labels to predict (``"A"``, ``"A+B"``). Default: the keys of ``n_cells`` when it is
        a mapping, else every perturbation in ``controls``.
    n_cells : int or mapping of str to int, optional
        Cells per perturbation (and cell type); a mapping gives each its own count (e.g.
        a benchmark's ``pert_counts.csv`` as a Series). Default: as many as there are
        controls.
    with_controls : bool, default=False
        Also return the control cells themselves (labelled ``control_label``, as
        submissions and :func:`sktx.metrics` expect).
    output : {"log1p", "counts"}, default="log1p"
        ``"log1p"``: a dense float32 matrix. ``"counts"``: raw integer counts (CSR float32)
        at each source control cell's depth, by the count model of :mod:`sktx._counts`,
        with each context's dispersion estimated once on its control cells and each
        perturbation sampled from its own seeded stream (so the counts do not depend on
        ``chunk_size``).
    all_genes : bool, default=False
        Every gene of ``controls``, not only the model's (unmodelled genes as in the controls).
    random_state : int, RandomState instance or None, default=0
        Which control cells are drawn (and the count sampling).
    chunk_size : int, optional
        Perturbations predicted per model call. Default: whole perturbations up to about
        ``2**26`` predicted values (cells x genes) per call, ~3,700 cells at 18,080 genes.
        The result does not depend on it; memory does: one chunk's query and prediction
        are held at a time, beside the output (filled in place for log1p, CSR blocks
        stacked once for counts).
    **keys
        ``perturbation_key``, ``control_label``, ``cell_type_key``; default: the
        model's, else those :func:`sktx.datasets.load_h5ad` recorded in
        ``controls.uns['sktx']``.

    Returns
    -------
    AnnData
        Predicted cells: ``obs`` of the source control cells with ``obs[perturbation_key]``
        (categorical) set to the perturbation and ``obs["control_cell"]``; ``var`` the
        predicted genes with the annotations of ``controls.var``; ``uns['sktx']`` the keys.

    Examples
    --------
    >>> import sktx
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=30, n_perturbations=4, random_state=0)
    >>> model = sktx.AdditiveBaseline().fit(adata)
    >>> pred = sktx.predict_perturbations(model, adata, ["G00002", "G00002+G00004"], n_cells=5)
    >>> pred.obs["target_gene"].value_counts().sort_index().to_dict()
    {'G00002': 5, 'G00002+G00004': 5}
    """
    from sktx._counts import model_keys
    from sktx.model_selection import make_query

    unknown = set(keys) - set(DEFAULT_KEYS)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(unknown)}; keys are {list(DEFAULT_KEYS)}."
        )
    if output not in ("log1p", "counts"):
        raise ValueError(f"`output` must be 'log1p' or 'counts', got {output!r}.")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size!r}.")
    if isinstance(controls, PerturbationData):
        data = controls
        controls = data.to_adata()
        controls.uns["sktx"] = {k: getattr(data, k) for k in DEFAULT_KEYS}
    mkeys = model_keys(model)
    given = {k: v for k, v in mkeys.items() if k in DEFAULT_KEYS}
    keys = resolve_keys(controls, **{**given, **keys})
    key, ctrl = keys["perturbation_key"], keys["control_label"]
    info = validate_adata(controls, **keys, check_values=False)
    plan = _plan(info, perturbations, n_cells, ctrl)
    chunks = _chunks(plan, chunk_size, controls.n_vars, _batch_size(model))
    mirror = perturbations is None and n_cells is None
    # int seeds give the query draw and the count sampling a stream each (as
    # `make_query` + `predict(output="counts")` did); one stream is shared over chunks
    rng_query = check_random_state(random_state)
    sampler = None
    if output == "counts":
        sampler = _Sampler(controls, info, keys, mkeys, plan, check_random_state(random_state))
    n_rows = sum(item[1] for item in plan) + (int(info.is_control.sum()) if with_controls else 0)

    def queries():
        offset = 0
        for chunk in chunks:
            labels = [label for label, *_ in chunk]
            source = (
                controls[info.is_control | np.isin(info.labels, labels)] if mirror else controls
            )
            query = make_query(
                source,
                perturbations=None if mirror else labels,
                n_cells=n_cells,
                random_state=rng_query,
                **keys,
            )
            if query.n_obs != sum(item[1] for item in chunk):  # the plan must be make_query's
                raise RuntimeError("predict_perturbations: chunk plan and query disagree.")
            query.obs_names = pd.Index([f"query{offset + i}" for i in range(query.n_obs)])
            offset += query.n_obs
            yield query
        if with_controls:  # the control cells themselves, unchanged, last
            own = controls[info.is_control].copy()
            own.obs["control_cell"] = own.obs_names.to_numpy()
            own.obs[key] = ctrl
            yield own

    # an unseen context starts from the mean of all its controls, not of one chunk's
    means = {}
    if info.cell_types is not None:
        rows = np.flatnonzero(info.is_control)
        means = unseen_control_means(model, controls[rows], info.cell_types[rows])
    with unseen_context_basal(means):
        pred = _assemble(model, queries(), n_rows, sampler, all_genes)
    return _annotate(pred, controls, key, keys)


def _annotate(pred, controls, key: str, keys: dict):
    """Ready for scanpy: the controls' gene annotations, categorical labels, the keys."""
    var = controls.var.reindex(pred.var_names)
    for column in var.columns:
        if column not in pred.var.columns:
            pred.var[column] = var[column].to_numpy()
    labels = pred.obs[key].astype(str)
    pred.obs[key] = pd.Categorical(labels, categories=sorted(set(labels)))
    pred.obs_names = pd.Index(np.asarray(pred.obs_names, dtype=str))
    pred.uns["sktx"] = {k: v for k, v in keys.items() if v is not None}
    return pred


def _plan(info, perturbations, n_cells, control_label: str) -> list[tuple[str, int, int]]:
    """``(label, query cells, groups)`` in :func:`~sktx.model_selection.make_query`'s order.

    A group is a (label, cell type) pair: what the models predict one by one.
    """
    from sktx.model_selection import _cell_counts

    counts = _cell_counts(n_cells, perturbations)
    labels = np.asarray(info.labels).astype(str)
    is_ctrl = np.asarray(info.is_control)
    types = (
        np.asarray(info.cell_types).astype(str)
        if info.cell_types is not None
        else np.full(labels.size, "")
    )
    if perturbations is None and n_cells is None:
        # make_query mirrors the real perturbed cells, sorted by label
        frame = pd.DataFrame({"p": labels[~is_ctrl], "ct": types[~is_ctrl]})
        sizes = frame.groupby("p", sort=True)["ct"].agg(["size", "nunique"])
        return [(str(p), int(n), int(g)) for p, (n, g) in sizes.iterrows()]
    if perturbations is None:
        perturbations = list(counts) if counts is not None else sorted(set(labels[~is_ctrl]))
    pools = [int((is_ctrl & (types == ct)).sum()) for ct in set(types.tolist())]
    pools = [n for n in pools if n]
    plan = []
    for p in perturbations:
        if p == control_label:
            continue
        per = counts[p] if counts is not None else n_cells
        plan.append((str(p), sum(per or n for n in pools), len(pools)))
    return plan


def _chunks(plan, chunk_size: int | None, n_genes: int, align: int) -> list[list[tuple]]:
    """Whole perturbations per chunk: ``chunk_size`` of them, or ~``_CHUNK_VALUES`` values.

    A chunk ends only after a multiple of ``align`` groups (the model's ``batch_size``):
    the network then predicts the same batches of groups as in one call, so the values
    are the same to the last bit when the labels come sorted (as groups are).
    """
    budget = max(1, _CHUNK_VALUES // max(int(n_genes), 1))  # cells per chunk
    out, cur, rows, groups = [], [], 0, 0
    for item in plan:
        full = len(cur) >= chunk_size if chunk_size else rows + item[1] > budget
        if cur and full and groups % align == 0:
            out.append(cur)
            cur, rows, groups = [], 0, 0
        cur.append(item)
        rows += item[1]
        groups += item[2]
    if cur or not out:
        out.append(cur)
    return out


def _batch_size(model) -> int:
    """Groups the model's network predicts per batch (1 for models without one)."""
    try:
        params = model.get_params(deep=True)
    except (AttributeError, TypeError):
        return 1
    hits = [v for k, v in params.items() if k == "batch_size" or k.endswith("__batch_size")]
    return int(hits[-1]) if hits and isinstance(hits[-1], (int, np.integer)) else 1


class _Sampler:
    """Counts out, the same whatever the chunks: one dispersion per context, one seed per label.

    The count model is :mod:`sktx._counts`'s; the dispersion ``phi_g`` of each context is
    estimated once on its control cells (the cells every query cell is drawn from), and
    each perturbation's counts come from its own seeded stream.
    """

    def __init__(self, controls, info, keys, mkeys, plan, rng):
        from sktx._counts import _check_counts_query

        self.mkeys = mkeys
        self.keys = {**keys, **({"layer": mkeys["layer"]} if "layer" in mkeys else {})}
        own = controls[np.asarray(info.is_control)]
        self.ctrl = prepare(own, **self.keys, require_control=False)
        _check_counts_query(self.ctrl)
        seeds = rng.randint(np.iinfo(np.int32).max, size=len(plan))
        self.seeds = {item[0]: int(s) for item, s in zip(plan, seeds, strict=True)}
        self._phi, self._cols = None, None

    def phi(self, cols) -> dict:
        from sktx._counts import context_dispersions

        if self._cols is None or not np.array_equal(cols, self._cols):
            self._phi = context_dispersions(self.ctrl, cols)
            self._cols = cols
        return self._phi

    def predict(self, model, query, all_genes: bool):
        """One chunk: log1p prediction, then counts (CSR float32)."""
        import anndata as ad

        from sktx._counts import _rows, expected_counts, sample_counts, with_all_genes

        data = prepare(query, **self.keys, require_control=False)
        pred = model.predict(data if "perturbation_key" in self.mkeys else query)
        panel = pd.Index(pred.var_names.astype(str))
        cols = data.genes.get_indexer(panel)
        if (cols < 0).any():
            raise DataContractError(
                f"the prediction has genes the query does not hold (e.g. "
                f"{list(panel[cols < 0][:5])}); predict from a query with the model's genes."
            )
        pred_X = pred.X.toarray() if sp.issparse(pred.X) else np.asarray(pred.X)
        phi = self.phi(cols)
        y = np.zeros((data.n_obs, len(panel)), dtype=np.float32)
        labels, ctx, lib = data.labels, data.contexts, data.library_size
        for label in pd.unique(labels[~data.is_control]):
            # a Generator: its gamma draws are faster than RandomState's (same model)
            rng = np.random.default_rng(self.seeds[str(label)])
            rows_l = np.flatnonzero((labels == label) & ~data.is_control)
            for ct in np.unique(ctx[rows_l]):
                rows_c = rows_l[ctx[rows_l] == ct]
                for start in range(0, rows_c.size, _SAMPLE_ROWS):
                    r = rows_c[start : start + _SAMPLE_ROWS]
                    y[r] = sample_counts(expected_counts(pred_X[r], lib[r]), phi[ct], rng)
        del pred_X
        ctrl = np.flatnonzero(data.is_control)
        if ctrl.size:  # control cells keep their own counts
            y[ctrl] = _rows(data.counts, ctrl, cols).toarray()
        X = sp.csr_matrix(y)
        del y
        var = pred.var.copy()
        if all_genes:  # genes the model does not predict: the query cells' own counts
            X, var = with_all_genes(X, data, data.counts, cols)
        X.sort_indices()
        X.eliminate_zeros()
        return ad.AnnData(X=X, obs=pred.obs.copy(), var=var)


def _assemble(model, queries, n_rows: int, sampler, all_genes: bool):
    """Predict the queries one by one into one output: dense log1p filled, or CSR stacked."""
    import anndata as ad

    from sktx._counts import predict_output

    X, blocks, obs, var, uns, at = None, [], [], None, None, 0
    for query in queries:
        if sampler is not None:
            pred = sampler.predict(model, query, all_genes)
        elif all_genes:
            pred = predict_output(model, query, output="log1p", all_genes=True)
        else:
            pred = model.predict(query)
        if var is None:
            var, uns = pred.var.copy(), dict(pred.uns)
        obs.append(pred.obs)
        if sampler is not None:
            blocks.append(pred.X)
        else:
            if X is None:  # allocated once; pages are touched as the chunks fill them
                X = np.empty((n_rows, pred.n_vars), dtype=pred.X.dtype)
            X[at : at + pred.n_obs] = pred.X.toarray() if sp.issparse(pred.X) else pred.X
        at += pred.n_obs
        del pred, query
    if sampler is not None:
        X = _stack_csr(blocks, n_rows, len(var))
    obs = pd.concat(obs) if obs else pd.DataFrame()
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns)


def _stack_csr(blocks: list, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """``sp.vstack`` of CSR blocks, freeing each as it is copied (peak ~ one copy + a block)."""
    total = sum(b.nnz for b in blocks)
    dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
    data = np.empty(total, dtype=np.float32)
    indices = np.empty(total, dtype=dtype)
    indptr = np.zeros(n_rows + 1, dtype=dtype)
    at = row = 0
    blocks.reverse()
    while blocks:
        b = blocks.pop()
        data[at : at + b.nnz] = b.data
        indices[at : at + b.nnz] = b.indices
        indptr[row + 1 : row + 1 + b.shape[0]] = b.indptr[1:] + at
        at += b.nnz
        row += b.shape[0]
        del b
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
