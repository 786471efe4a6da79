"""``predict_perturbations``: a fitted model, control cells and a list of perturbations in,
an AnnData of predicted cells out (the GEARS-style call, for any sktx model or Pipeline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sktx.data import PerturbationData
from sktx.data._object import DEFAULT_KEYS, resolve_keys

__all__ = ["predict_perturbations"]


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
        ``"counts"``: raw integer counts at each source control cell's depth
        (:func:`sktx._counts.predict_output`, as ``model.predict(..., output="counts")``).
    all_genes : bool, default=False
        Every gene of ``controls``, not only the model's (unmodelled genes as in the controls).
    random_state : int, RandomState instance or None, default=0
        Which control cells are drawn (and the count sampling).
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
    import anndata as ad

    from sktx.model_selection import make_query

    unknown = set(keys) - set(DEFAULT_KEYS)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(unknown)}; keys are {list(DEFAULT_KEYS)}."
        )
    if output not in ("log1p", "counts"):
        raise ValueError(f"`output` must be 'log1p' or 'counts', got {output!r}.")
    if isinstance(controls, PerturbationData):
        data = controls
        controls = data.to_adata()
        controls.uns["sktx"] = {k: getattr(data, k) for k in DEFAULT_KEYS}
    from sktx._counts import model_keys

    given = {k: v for k, v in model_keys(model).items() if k in DEFAULT_KEYS}
    keys = resolve_keys(controls, **{**given, **keys})
    key, ctrl = keys["perturbation_key"], keys["control_label"]
    query = make_query(
        controls, perturbations=perturbations, n_cells=n_cells, random_state=random_state, **keys
    )
    if with_controls:
        is_ctrl = (controls.obs[key].astype(str) == ctrl).to_numpy()
        own = controls[is_ctrl].copy()
        own.obs["control_cell"] = own.obs_names.to_numpy()
        own.obs[key] = ctrl
        query = ad.concat([query, own], merge="first", uns_merge="first")
    if output != "log1p" or all_genes:
        from sktx._counts import predict_output

        pred = predict_output(
            model, query, output=output, all_genes=all_genes, random_state=random_state
        )
    else:
        pred = model.predict(query)
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
