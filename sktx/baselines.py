"""Honest baselines with the sktx estimator API: the bar a perturbation model must clear.

All baselines ``fit(adata)`` on cells with ``obs[perturbation_key]`` (counts or
log1p; counts are log1p-normalised first) and ``predict(query)`` one profile
per query cell: query cells labelled with a perturbation get that
perturbation's predicted log1p profile (the same for every cell of one
perturbation and cell type; ``cells="profile"``, cell-eval's convention) or,
with ``cells="controls"``, the query's own control cells carried to that
profile's mean the way :class:`~sktx.regressor.PerturbationRegressor` does it
(zeros stay zero, non-zero values are scaled); query cells labelled as control
are returned as they are. Outputs are non-negative log1p AnnData with the query's obs and the
training genes as var (build queries with :func:`sktx.model_selection.make_query`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from sktx._effects import fit_by_cell_type
from sktx._pseudobulk import nonzero_level, pseudobulk
from sktx._validation import (
    DataContractError,
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
    split_targets,
    validate_adata,
)

__all__ = ["AdditiveBaseline", "ControlBaseline", "LinearBaseline", "MeanBaseline"]

# Cell-type key used internally when no cell_type_key is given.
_ALL = ""


class _Baseline(RegressorMixin, BaseEstimator):
    """Shared fit/predict plumbing; subclasses implement ``_fit`` and ``_delta``."""

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        cells: str = "profile",
    ) -> None:
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.cells = cells

    def _validate(self, adata, **kwargs):
        return validate_adata(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            **kwargs,
        )

    @staticmethod
    def _log1p(adata):
        return adata if is_log_normalized(adata) else log_normalize(adata)

    def fit(self, adata, y=None):
        """Learn from the cells of ``adata``.

        Parameters
        ----------
        adata : AnnData
            Cells x genes with control cells and perturbed cells; counts or log1p.
        y : ignored

        Returns
        -------
        self
        """
        self._validate(adata, require_perturbed=True)
        data = self._log1p(adata)
        pb = pseudobulk(data, self.perturbation_key, cell_type_key=self.cell_type_key)
        groups = pb.groups.fillna({"cell_type": _ALL})
        pb = type(pb)(pb.means, groups, pb.genes)
        self.feature_names_in_ = np.asarray(adata.var_names, dtype=object)
        self.n_features_in_ = adata.n_vars
        is_ctrl = (groups["perturbation"] == self.control_label).to_numpy()
        self.control_profiles_ = pd.DataFrame(
            pb.means[is_ctrl], index=groups["cell_type"][is_ctrl].to_numpy(), columns=pb.genes
        )
        self.perturbations_ = sorted(set(groups["perturbation"][~is_ctrl]))
        # typical non-zero level per gene, for cells="controls"
        self.nonzero_level_ = nonzero_level(get_matrix(data))
        self._fit(pb)
        return self

    def _fit(self, pb) -> None:
        raise NotImplementedError

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        raise NotImplementedError

    def _profile(self, label: str, cell_type: str) -> np.ndarray:
        return self.control_profiles_.loc[cell_type].to_numpy() + self._delta(label, cell_type)

    def _query_matrix(self, adata):
        check_genes(adata, self.feature_names_in_, what="training genes")
        data = self._log1p(adata)
        cols = pd.Index(data.var_names).get_indexer(self.feature_names_in_)
        return get_matrix(data)[:, cols]

    def predict(self, adata):
        """Predict the expression of each query cell under its perturbation label.

        Parameters
        ----------
        adata : AnnData
            Query cells (usually control cells relabelled, see
            :func:`sktx.model_selection.make_query`) holding at least the
            training genes; counts or log1p.

        Returns
        -------
        AnnData
            One row per query cell (obs copied), var = training genes, dense
            non-negative log1p ``X``.
        """
        import anndata as ad

        check_is_fitted(self)
        if self.cells not in ("profile", "controls"):
            raise ValueError(f"`cells` must be 'profile' or 'controls', got {self.cells!r}.")
        info = self._validate(adata, require_control=False)
        X = self._query_matrix(adata)
        types = info.cell_types if info.cell_types is not None else np.full(adata.n_obs, _ALL)
        unknown = sorted(set(types[~info.is_control].tolist()) - set(self.control_profiles_.index))
        if unknown:
            raise DataContractError(
                f"query cell types {unknown} were not seen in `fit` (seen: "
                f"{list(self.control_profiles_.index)}); fit on data that holds them."
            )
        out = np.empty((adata.n_obs, len(self.feature_names_in_)))
        ctrl_rows = np.flatnonzero(info.is_control)
        ctrl = X[ctrl_rows]
        out[ctrl_rows] = ctrl.toarray() if sp.issparse(ctrl) else ctrl
        pert_rows = np.flatnonzero(~info.is_control)
        frame = pd.DataFrame({"p": info.labels[pert_rows], "ct": types[pert_rows]})
        for (label, ct), idx in frame.groupby(["p", "ct"], sort=False).indices.items():
            rows = pert_rows[idx]
            if self.cells == "profile":
                out[rows] = self._profile(label, ct)
            else:
                out[rows] = _carry_cells(X[rows], self._profile(label, ct), self.nonzero_level_)
        np.clip(out, 0.0, None, out=out)
        return ad.AnnData(
            out, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(self.feature_names_in_))
        )

    def __sklearn_tags__(self):
        # multi-output regressors of AnnData: no y is needed, the targets are the cells
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True  # CSR `X` is read as is
        tags.input_tags.positive_only = True  # counts or log1p; negatives are rejected
        return tags

    def score(self, adata, y=None) -> float:
        """Pearson correlation of predicted and real deltas on ``adata``'s perturbations.

        Predicts every perturbation of ``adata`` from its control cells
        (:data:`sktx.metrics.pearson_delta_scorer`); higher is better.
        """
        from sktx.metrics import pearson_delta_scorer

        return pearson_delta_scorer(self, adata)


def _carry_cells(cells, profile: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Query cells carried to mean ``profile`` with the regressor's zero-preserving map."""
    import torch

    from sktx.nn import predict_cells

    x = torch.as_tensor(cells.toarray() if sp.issparse(cells) else np.asarray(cells))[None]
    x = x.double()
    basal = x.mean(1)
    d = torch.as_tensor(profile, dtype=torch.float64)[None] - basal
    lvl = torch.as_tensor(level, dtype=torch.float64)
    return predict_cells(x, basal, d, torch.zeros_like(basal), lvl)[0].numpy()


class ControlBaseline(_Baseline):
    """Predict no change: every query cell keeps its own (control) expression.

    Parameters
    ----------
    perturbation_key : str, default="target_gene"
        ``obs`` column with perturbation labels.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        ``obs`` column with cell types.

    Attributes
    ----------
    control_profiles_ : DataFrame
        Mean log1p control profile per cell type (``""`` without a key).
    perturbations_ : list of str
        Perturbations seen in ``fit``.
    feature_names_in_ : ndarray of str
        Training genes.
    n_features_in_ : int

    See Also
    --------
    MeanBaseline, AdditiveBaseline, LinearBaseline

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> pred = ControlBaseline().fit(adata).predict(make_query(adata))
    >>> pred.n_vars
    40
    """

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
    ) -> None:
        # no `cells` option: the query's own cells are the prediction
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key

    def _fit(self, pb) -> None:
        return None

    def predict(self, adata):
        """Return the query cells' own log1p expression on the training genes."""
        import anndata as ad

        check_is_fitted(self)
        self._validate(adata, require_control=False)
        X = self._query_matrix(adata)
        X = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float64)
        return ad.AnnData(
            X, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(self.feature_names_in_))
        )


class MeanBaseline(_Baseline):
    """Predict the mean perturbed profile: cell-eval's cell-mean baseline.

    Every perturbed query cell gets the mean of the training pseudobulks of
    all labels of its cell type — control included, exactly as cell-eval's
    ``build_base_mean_adata`` builds the Virtual Cell Challenge baseline.

    Parameters
    ----------
    perturbation_key : str, default="target_gene"
        ``obs`` column with perturbation labels.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        One mean profile per cell type.
    cells : {"profile", "controls"}, default="profile"
        Every perturbed query cell = the predicted profile (cell-eval's
        baseline convention), or the query's control cells carried to the
        predicted mean with zeros kept (as the regressor does).

    Attributes
    ----------
    mean_profiles_ : DataFrame
        Predicted log1p profile per cell type.
    control_profiles_ : DataFrame
        Mean log1p control profile per cell type.
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    See Also
    --------
    sktx.metrics.build_mean_baseline : The same baseline built from real data.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> pred = MeanBaseline().fit(adata).predict(make_query(adata))
    >>> bool((pred.X >= 0).all())
    True
    """

    def _fit(self, pb) -> None:
        frame = pd.DataFrame(pb.means, columns=pb.genes)
        self.mean_profiles_ = frame.groupby(pb.groups["cell_type"].to_numpy()).mean()

    def _profile(self, label: str, cell_type: str) -> np.ndarray:
        return self.mean_profiles_.loc[cell_type].to_numpy()


class AdditiveBaseline(_Baseline):
    """Control plus the sum of single-perturbation deltas.

    A label seen in training gets its own measured delta. An unseen label
    ``"A+B"`` gets ``delta(A) + delta(B)`` from the training singles; a
    target never seen as a single contributes the mean training delta (so an
    unseen single is predicted as control + mean delta). Deltas are pseudobulk
    log1p differences to the controls of the same cell type.

    Parameters
    ----------
    perturbation_key : str, default="target_gene"
        ``obs`` column with perturbation labels.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        Deltas per cell type.
    cells : {"profile", "controls"}, default="profile"
        Every perturbed query cell = the predicted profile (cell-eval's
        baseline convention), or the query's control cells carried to the
        predicted mean with zeros kept (as the regressor does).
    effects : {"singles", "joint"}, default="singles"
        Where a target's effect comes from. ``"singles"``: its single
        perturbation only (the classic additive baseline). ``"joint"``: a
        ridge fit over every training label, singles and combinations
        (``delta(A+B) = 2 * shared + specific[A] + specific[B]``, penalty by
        leave-one-label-out CV), so a target seen only inside combinations
        gets an effect too and an unseen target gets the typical effect
        ``shared``. This is the baseline
        :class:`~sktx.regressor.PerturbationRegressor` adds its residual to.

    Attributes
    ----------
    deltas_ : DataFrame
        Training deltas, index (perturbation, cell type).
    mean_deltas_ : DataFrame
        Mean training delta per cell type.
    effects_ : dict
        ``effects="joint"`` only: the fitted
        :class:`~sktx._effects.TargetEffects` per cell type (ridge penalty in
        ``effects_[ct].lam``).
    control_profiles_ : DataFrame
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    Notes
    -----
    On held-out Norman K562 combinations this simple sum was the best of the
    simple predictors measured in the design phase (see docs/evaluation.md).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = AdditiveBaseline().fit(adata)
    >>> model.predict(make_query(adata, perturbations=["G00001+G00002"])).n_obs > 0
    True
    """

    def __init__(
        self,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        cells: str = "profile",
        effects: str = "singles",
    ) -> None:
        super().__init__(
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
            cells=cells,
        )
        self.effects = effects

    def _fit(self, pb) -> None:
        if self.effects not in ("singles", "joint"):
            raise ValueError(f"`effects` must be 'singles' or 'joint', got {self.effects!r}.")
        deltas, groups = pb.deltas(self.control_label)
        index = pd.MultiIndex.from_frame(groups[["perturbation", "cell_type"]])
        self.deltas_ = pd.DataFrame(deltas, index=index, columns=pb.genes)
        self.mean_deltas_ = self.deltas_.groupby(level="cell_type").mean()
        if self.effects == "joint":
            fits = fit_by_cell_type(
                deltas,
                groups["perturbation"].tolist(),
                groups["cell_type"].tolist(),
                self.control_label,
            )
            self.effects_ = {ct: fx for ct, (fx, _) in fits.items()}

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        if (label, cell_type) in self.deltas_.index:
            return self.deltas_.loc[(label, cell_type)].to_numpy()
        if self.effects == "joint":
            targets = split_targets(label, self.control_label) or [label]
            return self.effects_[cell_type].predict(targets)
        total = np.zeros(self.deltas_.shape[1])
        for target in split_targets(label, self.control_label):
            if (target, cell_type) in self.deltas_.index:
                total += self.deltas_.loc[(target, cell_type)].to_numpy()
            else:
                total += self.mean_deltas_.loc[cell_type].to_numpy()
        return total


def _read_gmt(path) -> dict[str, list[str]]:
    sets = {}
    for line in Path(path).read_text().splitlines():
        fields = line.rstrip("\n").split("\t")
        if len(fields) >= 3:
            sets[fields[0]] = [g for g in fields[2:] if g]
    return sets


def _prior_embedding(gene_sets: Mapping[str, list[str]], k: int) -> pd.DataFrame:
    """Truncated SVD of the gene x gene-set membership matrix (rows = genes)."""
    from sklearn.decomposition import TruncatedSVD

    genes = sorted({g for members in gene_sets.values() for g in members})
    pos = {g: i for i, g in enumerate(genes)}
    rows, cols = [], []
    for j, members in enumerate(gene_sets.values()):
        for g in set(members):
            rows.append(pos[g])
            cols.append(j)
    M = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genes), len(gene_sets)))
    k = max(1, min(k, min(M.shape) - 1))
    emb = TruncatedSVD(n_components=k, algorithm="arpack", random_state=0).fit_transform(M)
    return pd.DataFrame(emb, index=pd.Index(genes))


class LinearBaseline(_Baseline):
    """The low-rank linear model of Ahlmann-Eltze, Huber & Anders (2025).

    ``Y ≈ G W Pᵀ + b``: Y holds the training pseudobulk deltas (genes x
    perturbations), b their mean per cell type, G the top ``n_components``
    principal components of the centred Y (gene scores, genes x K), and P the
    perturbation embedding: for each target, its row of G when the target is
    a measured gene, concatenated with its row of a prior gene embedding when
    one is given (``gene_embedding`` or ``prior_gene_sets``) — zeros where a
    source lacks the gene; a combination sums its targets' rows. W is the
    closed-form ridge solution
    ``W = (GᵀG + λI)⁻¹ Gᵀ (Y - b) P (PᵀP + λI)⁻¹``.

    Parameters
    ----------
    n_components : int, default=10
        Principal components of the training deltas (K).
    ridge : float, default=0.1
        Ridge penalty λ.
    gene_embedding : DataFrame, optional
        Prior gene embedding, genes (index) x dimensions; describes targets that
        are not measured.
    prior_gene_sets : str, Path or mapping, optional
        A GMT file (or ``{set name: genes}``) whose gene x set membership
        matrix is reduced by truncated SVD to ``n_prior_components`` dimensions;
        used when ``gene_embedding`` is None.
    n_prior_components : int, default=10
        Dimensions kept from ``prior_gene_sets``.
    perturbation_key : str, default="target_gene"
    control_label : str, default="non-targeting"
    cell_type_key : str, optional
        Deltas and b per cell type; G and W are shared.
    cells : {"profile", "controls"}, default="profile"
        How perturbed query cells are built: every cell = the predicted
        profile (cell-eval's baseline convention), or the query's control
        cells carried to the predicted mean with zeros kept (as the
        regressor does; see the module docstring).

    Attributes
    ----------
    gene_embedding_ : DataFrame
        G, training genes x K.
    prior_embedding_ : DataFrame or None
        The prior embedding used, rescaled so its mean row norm matches G's.
    coef_ : ndarray
        W.
    intercept_ : DataFrame
        b per cell type.
    control_profiles_ : DataFrame
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    Notes
    -----
    Without a prior, a perturbation whose targets are all unmeasured has a zero
    embedding and is predicted as control + b (the mean delta). In the
    Norman/McFaline file only 1 of 31 targets is among the 500 measured genes,
    so pass ``prior_gene_sets`` (e.g. GO biological process as GMT) there.

    References
    ----------
    Ahlmann-Eltze, C., Huber, W. & Anders, S. Deep-learning-based gene
    perturbation effect prediction does not yet outperform simple linear
    baselines. Nature Methods (2025).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=6, random_state=0)
    >>> model = LinearBaseline(n_components=3).fit(adata)
    >>> model.coef_.shape
    (3, 3)
    >>> model.predict(make_query(adata)).n_vars
    40
    """

    def __init__(
        self,
        *,
        n_components: int = 10,
        ridge: float = 0.1,
        gene_embedding: pd.DataFrame | None = None,
        prior_gene_sets=None,
        n_prior_components: int = 10,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        cells: str = "profile",
    ) -> None:
        super().__init__(
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=cell_type_key,
            cells=cells,
        )
        self.n_components = n_components
        self.ridge = ridge
        self.gene_embedding = gene_embedding
        self.prior_gene_sets = prior_gene_sets
        self.n_prior_components = n_prior_components

    def _check_params(self) -> None:
        for name, low in (("n_components", 1), ("n_prior_components", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        if not (isinstance(self.ridge, (int, float)) and self.ridge >= 0):
            raise ValueError(f"`ridge` must be a number >= 0, got {self.ridge!r}.")
        if self.gene_embedding is not None and not isinstance(self.gene_embedding, pd.DataFrame):
            raise TypeError(
                "`gene_embedding` must be a pandas DataFrame indexed by gene symbol, got "
                f"{type(self.gene_embedding).__name__}."
            )

    def _prior(self) -> pd.DataFrame | None:
        if self.gene_embedding is not None:
            emb = self.gene_embedding.astype(float)
            return emb[~emb.index.duplicated()]
        if self.prior_gene_sets is None:
            return None
        sets = self.prior_gene_sets
        if isinstance(sets, (str, Path)):
            if not Path(sets).exists():
                raise FileNotFoundError(
                    f"`prior_gene_sets` file {str(sets)!r} not found; pass a GMT path or a "
                    "mapping {set name: [genes]}."
                )
            sets = _read_gmt(sets)
        return _prior_embedding(dict(sets), self.n_prior_components)

    def _embed(self, label: str) -> np.ndarray:
        G, E = self.gene_embedding_, self.prior_embedding_
        parts = [np.zeros(G.shape[1])] + ([np.zeros(E.shape[1])] if E is not None else [])
        for target in split_targets(label, self.control_label):
            if target in G.index:
                parts[0] += G.loc[target].to_numpy()
            if E is not None and target in E.index:
                parts[1] += E.loc[target].to_numpy()
        return np.concatenate(parts)

    def fit(self, adata, y=None):
        """Fit G, W and b on the training pseudobulk deltas (see class docstring)."""
        self._check_params()
        return super().fit(adata, y)

    def _fit(self, pb) -> None:
        deltas, groups = pb.deltas(self.control_label)
        cell_types = groups["cell_type"].to_numpy()
        b = pd.DataFrame(deltas, columns=pb.genes).groupby(cell_types).mean()
        centred = deltas - b.loc[cell_types].to_numpy()
        U, S, _ = np.linalg.svd(centred.T, full_matrices=False)
        k = min(self.n_components, len(S))
        self.gene_embedding_ = pd.DataFrame(U[:, :k] * S[:k], index=pb.genes)
        prior = self._prior()
        if prior is not None:
            g_norm = np.linalg.norm(self.gene_embedding_.to_numpy(), axis=1).mean()
            p_norm = np.linalg.norm(prior.to_numpy(), axis=1).mean()
            prior = prior * (g_norm / p_norm if p_norm > 0 else 1.0)
        self.prior_embedding_ = prior
        self.intercept_ = b
        G = self.gene_embedding_.to_numpy()
        P = np.vstack([self._embed(label) for label in groups["perturbation"]])
        lam = float(self.ridge)
        left = np.linalg.solve(G.T @ G + lam * np.eye(G.shape[1]), G.T @ centred.T)
        self.coef_ = np.linalg.solve(P.T @ P + lam * np.eye(P.shape[1]), (left @ P).T).T

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        G = self.gene_embedding_.to_numpy()
        return self.intercept_.loc[cell_type].to_numpy() + G @ (self.coef_ @ self._embed(label))
