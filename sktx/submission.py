"""A Virtual Cell Challenge 2026 submission file from a fitted model.

:func:`write_submission` predicts, for each context, the requested perturbations from
that context's control cells, turns the prediction into raw integer counts on the
reference gene axis (:func:`sktx._counts.predict_output`, ``output="counts"``,
``all_genes=True``), checks the result with cell-eval2's own input checks and writes
the ``.h5ad`` atomically. ``sktx submit`` is the same from the command line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils import check_random_state

from sktx.data import DataContractError, prepare

__all__ = ["read_gene_names", "read_perturbations", "validate_submission", "write_submission"]

#: obs columns of the submission file.
TARGET_COLUMN = "target_gene"
CONTEXT_COLUMN = "context"
_HEADERS = {"gene", "genes", "gene_name", "gene_names", "gene_symbol", "symbol"}
# perturbations predicted per model call: bounds the dense prediction of one call
_BATCH = 16


def read_gene_names(genes) -> list[str]:
    """The reference gene axis: a list, or a ``gene_names.csv`` (one gene per line).

    Parameters
    ----------
    genes : sequence of str or path
        A header line (``gene``, ``gene_name``, ...) is skipped.

    Returns
    -------
    list of str

    Examples
    --------
    >>> read_gene_names(["A1BG", "A2M"])
    ['A1BG', 'A2M']
    """
    if isinstance(genes, (str, os.PathLike)):
        lines = [ln.strip().split(",")[0].strip() for ln in Path(genes).read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        if lines and lines[0].lower() in _HEADERS:
            lines = lines[1:]
        genes = lines
    genes = [str(g) for g in genes]
    dup = sorted({g for g in genes if genes.count(g) > 1}) if len(set(genes)) < len(genes) else []
    if dup or not genes:
        raise DataContractError(
            f"the gene list must name each gene once and not be empty; repeated: {dup[:10]}."
        )
    return genes


def read_perturbations(perturbations, n_cells: int) -> dict[str, int]:
    """Perturbations to predict with their cell counts.

    Parameters
    ----------
    perturbations : sequence of str, mapping, Series, DataFrame or path
        Target names (each gets ``n_cells``), ``{target: n_cells}``, or a
        ``target_gene,n_cells`` CSV (header optional; a missing count is ``n_cells``).
    n_cells : int
        Cells per perturbation when not given.

    Returns
    -------
    dict of str to int

    Examples
    --------
    >>> read_perturbations(["SRC", "TET1"], 400)
    {'SRC': 400, 'TET1': 400}
    """
    if isinstance(perturbations, (str, os.PathLike)):
        frame = pd.read_csv(perturbations, header=None, dtype=str, skipinitialspace=True)
        if str(frame.iloc[0, 0]).strip().lower() in {"target_gene", "target", "perturbation"}:
            frame = frame.iloc[1:]
        perturbations = {
            str(row.iloc[0]).strip(): (
                int(float(row.iloc[1])) if frame.shape[1] > 1 and pd.notna(row.iloc[1]) else n_cells
            )
            for _, row in frame.iterrows()
        }
    elif isinstance(perturbations, pd.DataFrame):
        perturbations = dict(zip(perturbations.iloc[:, 0], perturbations.iloc[:, 1], strict=True))
    elif isinstance(perturbations, (pd.Series, Mapping)):
        perturbations = dict(perturbations)
    elif isinstance(perturbations, Sequence):
        perturbations = {str(p): n_cells for p in perturbations}
    out = {str(k): int(v) for k, v in perturbations.items()}
    bad = {k: v for k, v in out.items() if v < 1}
    if not out or bad:
        raise DataContractError(
            f"each perturbation needs at least one cell, and at least one perturbation is "
            f"needed; got {bad or 'none'}."
        )
    return out


def validate_submission(adata, genes, *, max_counts_per_cell: float | None = None) -> None:
    """cell-eval2's own input checks of a submission (raised as they come).

    Raw counts (non-negative whole numbers, :func:`cell_eval2.norm.validate_input_type`),
    no cell total above the ``vcc2026`` cap (:func:`cell_eval2.norm.check_scale_limit`,
    1e6), and exactly the reference gene axis (:func:`cell_eval2.io.validate_gene_axis`).

    Parameters
    ----------
    adata : AnnData
    genes : sequence of str
        The reference gene axis, in order.
    max_counts_per_cell : float, optional
        Default: the ``vcc2026`` preset's ``max_counts_per_cell``.

    Raises
    ------
    ImportError
        cell-eval2 is not installed (``pip install 'sktx[eval]'``).
    ValueError
        The checks' own messages.
    """
    from sktx.metrics._vcc2026 import _cell_eval2

    ce = _cell_eval2()
    from cell_eval2 import io, norm

    cap = max_counts_per_cell
    if cap is None:
        cap = ce.EvalConfig.from_preset("vcc2026").max_counts_per_cell
    norm.validate_input_type(adata, "counts", allow_fractional=False)
    norm.check_scale_limit(adata, "counts", cap)
    io.validate_gene_axis(adata.var_names.to_numpy(), np.asarray(list(genes)))
    if not sp.issparse(adata.X):
        raise ValueError("a submission matrix must be sparse (CSR).")


def _controls(model, controls, context_key):
    """The control cells, prepared with the model's own keys (so predict passes them on)."""
    from sktx._counts import model_keys

    keys = model_keys(model)
    data = prepare(
        controls,
        perturbation_key=keys.get("perturbation_key", "target_gene"),
        control_label=keys.get("control_label", "non-targeting"),
        cell_type_key=keys.get("cell_type_key"),
        layer=keys.get("layer"),
        require_control=True,
    )
    if data.counts is None:
        raise DataContractError(
            "the control cells hold log1p values only; a submission is raw counts sampled "
            "at each control cell's depth, so pass the controls' raw counts."
        )
    if context_key is not None and context_key not in data.obs:
        raise DataContractError(
            f"`obs[{context_key!r}]` (context_key) not found in the control cells; "
            f"columns: {list(data.obs.columns)[:10]}."
        )
    return data[np.flatnonzero(data.is_control)]


def write_submission(
    model,
    controls,
    perturbations,
    genes,
    path,
    *,
    context_key: str | None = None,
    n_cells: int = 400,
    random_state=0,
    include_controls: bool = False,
):
    """Write a 2026 Virtual Cell Challenge submission ``.h5ad`` from a fitted model.

    For each context (``obs[context_key]`` of ``controls``; one context without it),
    ``n_cells`` query cells per perturbation are drawn from that context's control
    cells (:func:`~sktx.model_selection.make_query`), predicted by ``model`` and
    sampled as raw counts at each control cell's depth (the count model of
    :mod:`sktx._counts`); genes the model does not predict keep the control cell's
    own counts. The file holds raw integer counts (CSR float32), exactly the
    reference gene axis, ``obs["target_gene"]`` (and ``obs["context"]``); it is
    checked with cell-eval2's own input checks (:func:`validate_submission`) and
    written atomically (a unique temporary file beside ``path``, fsync, rename).

    Parameters
    ----------
    model : fitted estimator
        A sktx model, pipeline or :class:`~sktx.ProgressiveFit` (``predict`` -> log1p).
    controls : AnnData or PerturbationData
        Control cells of every context, raw counts, labelled with the model's
        control label in its ``perturbation_key`` column; they must hold every
        reference gene.
    perturbations : sequence of str, mapping or path
        Targets to predict, ``{target: n_cells}`` or a ``target_gene,n_cells`` CSV.
    genes : sequence of str or path
        The reference gene axis (``gene_names.csv``, one gene per line, in order).
    path : str or Path
        Output ``.h5ad``.
    context_key : str, optional
        ``obs`` column of ``controls`` naming the context (cell line).
    n_cells : int, default=400
        Cells per perturbation when ``perturbations`` does not say.
    random_state : int, RandomState instance or None, default=0
        Seeds the query draw and the sampled counts.
    include_controls : bool, default=False
        Append the control cells (restricted to the gene axis). The platform appends
        the real controls itself; scoring locally with cell-eval2 needs them.

    Returns
    -------
    AnnData
        What was written.

    Raises
    ------
    DataContractError
        Controls without counts, missing genes or contexts, bad perturbation lists.
    ImportError
        cell-eval2 is missing (its checks run before the file is written).

    Examples
    --------
    >>> import sktx
    >>> from sktx.baselines import MeanBaseline
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = MeanBaseline().fit(adata)
    >>> ctrl = adata[adata.obs["target_gene"] == "non-targeting"]
    >>> sub = write_submission(model, ctrl, ["G00002"], list(adata.var_names),  # doctest: +SKIP
    ...                        "submission.h5ad", n_cells=50)
    """
    import anndata as ad

    from sktx._counts import model_keys, predict_output
    from sktx.context import unseen_context_basal, unseen_control_means
    from sktx.model_selection import make_query

    genes = read_gene_names(genes)
    wanted = read_perturbations(perturbations, n_cells)
    data = _controls(model, controls, context_key)
    missing = [g for g in genes if g not in set(data.genes)]
    if missing:
        raise DataContractError(
            f"{len(missing)} reference genes are not in the control cells (e.g. "
            f"{missing[:5]}); the submission needs every gene of the gene list, and genes "
            "the model does not predict are carried from the controls."
        )
    data = data.select_genes(genes)
    rng = check_random_state(random_state)
    contexts = data.obs[context_key].astype(str).to_numpy() if context_key is not None else None
    parts, obs_parts = [], []
    names = sorted(set(contexts.tolist())) if contexts is not None else [None]
    targets = list(wanted)
    # an unseen context starts from the mean of all its controls, not of one batch's
    means = {}
    if model_keys(model).get("cell_type_key") is not None:
        means = unseen_control_means(model, data, data.contexts)
    with unseen_context_basal(means):
        for ct in names:
            ctx = data if ct is None else data[np.flatnonzero(contexts == ct)]
            for start in range(0, len(targets), _BATCH):
                batch = {t: wanted[t] for t in targets[start : start + _BATCH]}
                query = make_query(ctx, n_cells=batch, random_state=rng)
                pred = predict_output(
                    model, query, output="counts", all_genes=True, random_state=rng
                )
                parts.append(sp.csr_matrix(pred[:, genes].X, dtype=np.float32))
                obs_parts.append(_obs(query.labels, ct))
            if include_controls:
                parts.append(sp.csr_matrix(ctx.counts, dtype=np.float32))
                obs_parts.append(_obs(ctx.labels, ct))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = pd.Index([f"cell{i}" for i in range(len(obs))])
    out = ad.AnnData(sp.vstack(parts, format="csr"), obs=obs, var=pd.DataFrame(index=genes))
    out.X.sort_indices()
    validate_submission(out, genes)
    _atomic_write(out, Path(path))
    return out


def _obs(labels, context) -> pd.DataFrame:
    frame = pd.DataFrame({TARGET_COLUMN: np.asarray(labels, dtype=str)})
    if context is not None:
        frame[CONTEXT_COLUMN] = str(context)
    return frame


def _atomic_write(adata, path: Path) -> None:
    """Write next to ``path`` under a unique name, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
