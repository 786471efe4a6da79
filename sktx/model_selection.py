"""Cross-validation over perturbations, and the query cells a model predicts from.

A perturbation model is judged on perturbations it has not seen. Folds are
therefore made of perturbation labels; control cells are the basal state every
prediction starts from, so they go to both the training and the test side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state

from sktx._params import Integer, check_value
from sktx.data import (
    DataContractError,
    PerturbationData,
    canonical_obs_labels,
    get_matrix,
    validate_adata,
)
from sktx.data._object import resolve_keys

__all__ = ["PerturbationSplit", "make_query"]


class PerturbationSplit(BaseCrossValidator):
    """K-fold over perturbation labels, with control cells in every fold.

    Each non-control label (single ``"A"`` or combination ``"A+B"``) is held
    out in exactly one test fold, together with all its cells in every cell
    type. Control cells appear in both the training and the test indices, so
    the test split holds what a scorer needs: the held-out perturbed cells and
    the controls to simulate them from.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds (at least 2, at most the number of perturbations).
    shuffle : bool, default=False
        Shuffle the labels before splitting them into folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle; used only when ``shuffle=True``.
    perturbation_key : str, default="target_gene"
        ``obs`` column with perturbation labels.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        Accepted like every sktx estimator's, so one ``**keys`` dict fits all;
        folds are made of labels, which include every cell type's cells.

        Keys left at their defaults are read from ``uns['sktx']`` when
        :func:`sktx.datasets.load_h5ad` recorded them.

    Notes
    -----
    Labels are split as they are: a combination ``"A+B"`` may be in the test
    fold while its singles ``"A"`` and ``"B"`` are in training. That is the
    realistic setting for combinations (the singles have been measured) and
    the one :class:`~sktx.baselines.AdditiveBaseline` is built for. Use
    ``groups`` semantics of your own (e.g. ``GroupKFold`` on target genes) to
    hold out a gene with all its combinations.

    ``split(X)`` takes the AnnData itself as ``X``; scikit-learn then indexes
    it with ``adata[idx]`` (a view), so ``cross_validate`` and ``GridSearchCV``
    work on AnnData directly.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=6, random_state=0)
    >>> cv = PerturbationSplit(3)
    >>> train, test = next(cv.split(adata))
    >>> is_ctrl = (adata.obs["target_gene"] == "non-targeting").to_numpy()
    >>> bool(set(is_ctrl.nonzero()[0]) <= set(train) & set(test))
    True
    """

    def __init__(
        self,
        n_splits: int = 5,
        *,
        shuffle: bool = False,
        random_state=None,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
    ) -> None:
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key

    def _labels(self, X) -> tuple[np.ndarray, dict]:
        """Canonical labels (``"B+A"`` is ``"A+B"``), so no spelling of one perturbation
        can sit in training while another sits in the test fold; and the keys used."""
        if not hasattr(X, "obs"):
            raise TypeError(
                f"PerturbationSplit.split expects an AnnData, got {type(X).__name__}; pass "
                "the AnnData itself as `X` (e.g. `cross_validate(model, adata, cv=cv)`)."
            )
        keys = resolve_keys(
            X,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
        )
        if isinstance(X, PerturbationData):
            return X.labels, keys
        key = keys["perturbation_key"]
        if key not in X.obs.columns:
            raise DataContractError(
                f"`obs[{key!r}]` not found; available columns: "
                f"{list(X.obs.columns)[:20]}. Pass `PerturbationSplit(perturbation_key=...)`."
            )
        return canonical_obs_labels(X, key=key, control_label=keys["control_label"]), keys

    def _folds(self, labels: np.ndarray, keys: dict) -> list[np.ndarray]:
        check_value("n_splits", self.n_splits, Integer(low=2))
        ctrl = keys["control_label"]
        perts = np.array(sorted(set(labels.tolist()) - {ctrl}), dtype=object)
        if not (labels == ctrl).any():
            raise DataContractError(
                f"no control cells (`obs[{keys['perturbation_key']!r}] == "
                f"{ctrl!r}`); pass `control_label=` naming your controls."
            )
        if self.n_splits > len(perts):
            raise ValueError(
                f"`n_splits={self.n_splits}` exceeds the number of perturbations "
                f"({len(perts)}); lower `n_splits`."
            )
        if self.shuffle:
            check_random_state(self.random_state).shuffle(perts)
        return np.array_split(perts, self.n_splits)

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)``; controls are in both.

        Parameters
        ----------
        X : AnnData
            Cells with ``obs[perturbation_key]``.
        y, groups : ignored
            Present for scikit-learn compatibility.
        """
        labels, keys = self._labels(X)
        is_ctrl = labels == keys["control_label"]
        for held_out in self._folds(labels, keys):
            in_test = np.isin(labels, held_out)
            yield np.flatnonzero(~in_test), np.flatnonzero(in_test | is_ctrl)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Number of folds (``n_splits``)."""
        return self.n_splits


def make_query(
    adata,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str | None = None,
    perturbations: Sequence[str] | None = None,
    n_cells: int | Mapping[str, int] | None = None,
    random_state=0,
):
    """Control cells relabelled with the perturbations to predict.

    A model's ``predict(query)`` reads each query cell as "this control cell,
    had it received perturbation ``obs[perturbation_key]``".

    Parameters
    ----------
    adata : AnnData or PerturbationData
        Holds the control cells (and, by default, the real perturbed cells
        whose counts the query mirrors). A :class:`~sktx.PerturbationData`
        gives a PerturbationData query (its own keys are used).
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Draw each query cell from the controls of its own cell type.
        Keys left at their defaults are read from ``uns['sktx']`` when
        :func:`sktx.datasets.load_h5ad` recorded them.
    perturbations : sequence of str, optional
        Labels to predict. Default: the keys of ``n_cells`` when it is a
        mapping, else every perturbation in ``adata``.
    n_cells : int, mapping of str to int, or None
        Query cells per label (and cell type). A mapping (a dict or a pandas
        Series, e.g. a benchmark's ``pert_counts.csv``) gives each label its own
        count. ``None``: with ``perturbations``, as many as there are controls;
        without, one query cell per real perturbed cell.
    random_state : int, RandomState instance or None, default=0
        Which controls are drawn (without replacement while enough remain).

    Returns
    -------
    AnnData
        Controls' expression (sparse stays sparse), obs and var, with
        ``obs[perturbation_key]`` set to the label to predict,
        ``obs["control_cell"]`` naming the source control cell,
        ``layers['counts']`` when ``adata`` has it, and ``uns['sktx']`` copied
        (the keys it records travel with the query).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> query = make_query(adata)
    >>> int((adata.obs["target_gene"] != "non-targeting").sum()) == query.n_obs
    True
    >>> make_query(adata, n_cells={"G00004": 10}).obs["target_gene"].value_counts().to_dict()
    {'G00004': 10}
    """
    import anndata as ad

    if isinstance(adata, PerturbationData):
        info = adata
        control_label = adata.control_label
    else:
        keys = resolve_keys(
            adata,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
        )
        perturbation_key, control_label = keys["perturbation_key"], keys["control_label"]
        info = validate_adata(adata, **keys, check_values=False)
    counts = _cell_counts(n_cells, perturbations)
    if perturbations is None and counts is not None:
        perturbations = list(counts)
    rng = check_random_state(random_state)
    types = info.cell_types if info.cell_types is not None else np.full(adata.n_obs, "")
    ctrl_by_type = {
        ct: np.flatnonzero(info.is_control & (types == ct)) for ct in set(types.tolist())
    }
    if perturbations is None and n_cells is None:
        frame = pd.DataFrame({"p": info.labels[~info.is_control], "ct": types[~info.is_control]})
        wanted = frame.groupby(["p", "ct"], sort=True).size().items()
    else:
        if perturbations is None:
            perturbations = sorted(set(info.labels[~info.is_control].tolist()))
        cts = sorted(ct for ct, rows in ctrl_by_type.items() if rows.size)
        wanted = [
            ((p, ct), _count(counts, n_cells, p) or ctrl_by_type[ct].size)
            for p in perturbations
            if p != control_label
            for ct in cts
        ]
    sources, new_labels = [], []
    for (label, ct), n in wanted:
        pool = ctrl_by_type.get(ct, np.empty(0, dtype=int))
        if pool.size == 0:
            raise DataContractError(
                f"no `{control_label}` cells of cell type {ct!r} to build query cells for "
                f"{label!r}; each cell type needs its own controls."
            )
        sources.append(rng.choice(pool, size=n, replace=n > pool.size))
        new_labels.extend([label] * n)
    src = np.concatenate(sources) if sources else np.empty(0, dtype=int)
    if isinstance(adata, PerturbationData):
        query = adata[src].relabel(new_labels)
        obs = query.obs
        obs["control_cell"] = np.asarray(adata.obs_names)[src]
        obs.index = pd.Index([f"query{i}" for i in range(len(src))])
        return query
    X = get_matrix(adata)[src]
    obs = adata.obs.iloc[src].copy()
    obs["control_cell"] = np.asarray(adata.obs_names)[src]
    obs[perturbation_key] = pd.Series(new_labels, index=obs.index, dtype=object).astype(str)
    obs.index = pd.Index([f"query{i}" for i in range(len(src))])
    X = X.copy() if not sp.issparse(X) else X
    # raw counts travel with the query: a count model reads each cell's depth from them
    layers = {"counts": adata.layers["counts"][src]} if "counts" in adata.layers else None
    query = ad.AnnData(X, obs=obs, var=adata.var.copy(), layers=layers)
    for name in ("sktx", "log1p"):
        if isinstance(adata.uns.get(name), dict):
            query.uns[name] = dict(adata.uns[name])
    return query


def _cell_counts(n_cells, perturbations) -> dict[str, int] | None:
    """``n_cells`` as ``{label: count}`` when it is a mapping; checked."""
    if n_cells is None or isinstance(n_cells, (int, np.integer)):
        if n_cells is not None and (isinstance(n_cells, bool) or n_cells < 1):
            raise ValueError(f"`n_cells` must be a positive integer, got {n_cells!r}.")
        return None
    if not isinstance(n_cells, (Mapping, pd.Series)):
        raise TypeError(
            "`n_cells` must be an int, a mapping of labels to counts (e.g. "
            f"`{{'SGK1': 10}}` or a pandas Series) or None, got {type(n_cells).__name__}."
        )
    counts = {str(k): v for k, v in dict(n_cells).items()}
    bad = {k: v for k, v in counts.items() if not _is_count(v)}
    if bad:
        raise ValueError(f"`n_cells` counts must be positive integers, got {bad}.")
    if perturbations is not None:
        missing = sorted(set(map(str, perturbations)) - set(counts))
        if missing:
            raise ValueError(
                f"`n_cells` gives no count for {missing[:5]}; give one per perturbation or "
                "leave `perturbations=None` (the keys of `n_cells` are then predicted)."
            )
    return {k: int(v) for k, v in counts.items()}


def _is_count(value) -> bool:
    return (
        isinstance(value, (int, np.integer, float, np.floating))
        and not isinstance(value, bool)
        and float(value).is_integer()
        and value >= 1
    )


def _count(counts: dict | None, n_cells, label: str) -> int | None:
    return counts[label] if counts is not None else n_cells
