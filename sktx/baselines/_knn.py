"""KNNBaseline: an unseen target's effect is the mean effect of its most similar fitted targets."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx._docs import doc_params
from sktx._effects import fit_by_cell_type
from sktx._params import Integer, Options, Real
from sktx.baselines._base import _ALL, _Baseline, split_targets
from sktx.data import BackedRows
from sktx.genesets import read_gene_sets

__all__ = ["KNNBaseline"]

# Similarities at or below this are no similarity (round-off of a zero correlation).
_MIN_SIMILARITY = 1e-9


def _membership(gene_sets: dict[str, list[str]]) -> tuple[pd.Index, sp.csr_matrix]:
    """Upper-case gene symbols and their gene x set 0/1 membership matrix."""
    upper = [{g.upper() for g in members} for members in gene_sets.values()]
    genes = pd.Index(sorted(set().union(*upper)))
    pos = {g: i for i, g in enumerate(genes)}
    rows = [pos[g] for members in upper for g in members]
    cols = [j for j, members in enumerate(upper) for _ in members]
    M = sp.csr_matrix(
        (np.ones(len(rows)), (np.asarray(rows, int), np.asarray(cols, int))),
        shape=(len(genes), len(gene_sets)),
    )
    return genes, M


def _correlation(X, columns: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of every column of ``X`` with ``X[:, columns]`` (0 if constant).

    ``groups`` (an integer code per row): centred within each group, i.e. the
    pooled within-group correlation (several cell types' controls, without the
    differences between cell types).
    """
    n = X.shape[0]
    codes = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups, np.int64)
    counts = np.bincount(codes).astype(np.float64)
    onehot = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(len(counts), n))
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        cross = np.asarray((X.T @ X[:, columns]).todense()) / n
        sq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
        sums = np.asarray((onehot @ X).todense())
    else:
        X = np.asarray(X, dtype=np.float64)
        cross = X.T @ X[:, columns] / n
        sq = (X**2).mean(axis=0)
        sums = onehot @ X
    # group means m_k: sum_k n_k m_k m_k' is what centring within groups removes
    means = sums / np.maximum(counts, 1)[:, None]
    weighted = means * (counts / n)[:, None]
    cov = cross - weighted.T @ means[:, columns]
    var = sq - (weighted * means).sum(axis=0)
    # a constant column leaves round-off of its mean square: no correlation
    std = np.where(var > 1e-12 * sq, np.sqrt(np.clip(var, 0.0, None)), 0.0)
    scale = np.outer(std, std[columns])
    corr = np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 0)
    return np.clip(corr, -1.0, 1.0)


@doc_params
class KNNBaseline(_Baseline):
    """Knowledge-graph neighbours: an unseen target borrows the effects of similar fitted ones.

    A label seen in training gets its own measured delta. For any other label
    the delta is the sum over its targets (combinations are additive) of each
    target's effect: a *fitted* target (one with an effect from training, see
    ``effects``) keeps its own effect; an unseen target gets the
    similarity-weighted mean of the effects of its ``n_neighbors`` most similar
    fitted targets of the same cell type,

        effect(t) = sum_i s(t, f_i) effect(f_i) / sum_i s(t, f_i),

    over the neighbours with similarity s > 0. The similarity of two targets is
    the Jaccard index of the gene sets holding them (GO biological process,
    Hallmark, ... in ``gene_sets``) and, when both are measured genes, is mixed
    with their co-expression in the training control cells of that cell type:
    ``s = (1 - w) * jaccard + w * max(corr, 0)`` with ``w = coexpression_weight``
    (negative correlations count as no similarity). A target without any
    neighbour (in no gene set shared with a fitted target, and not positively
    co-expressed with one) falls back to the **mean effect** of the fitted
    targets (the typical effect ``shared`` of the joint fit with
    ``effects="joint"``; the mean single-perturbation delta with
    ``effects="singles"``), i.e. it is predicted as the additive baseline
    predicts an unseen target.

    Parameters
    ----------
    gene_sets : None, False, str, path, dict or list, default=None
        Gene sets in the ``gene_sets`` grammar of
        :func:`sktx.genesets.read_gene_sets` (``None`` = the built-in curated
        lists, ``False`` = none, a GMT path such as GO BP, ``"file.gmt::TERM"``,
        a dict, a list of these). Symbols are matched case-insensitively.
    n_neighbors : int, default=5
        Fitted targets averaged for an unseen target (fewer when fewer have a
        positive similarity). Not tuned on any dataset.
    coexpression_weight : float in [0, 1], default=0.5
        Weight ``w`` of control-cell co-expression in the similarity of two
        measured targets (0: gene sets only; 1: co-expression only when both
        are measured).
    effects : {"joint", "singles"}, default="joint"
        Where a fitted target's effect comes from: ``"joint"``, the ridge fit
        over every training label, singles and combinations, of
        :class:`AdditiveBaseline` (``effects="joint"``), so targets seen only
        inside combinations are fitted too; ``"singles"``, the measured delta
        of its single perturbation.
    {doc_keys}
    cell_type_key : str, optional
        Effects, neighbours and co-expression per cell type.
    {doc_cells}

    Attributes
    ----------
    deltas_ : DataFrame
        Training deltas, index (perturbation, cell type).
    target_effects_ : dict of str to DataFrame
        Per cell type: fitted targets (index) x genes.
    mean_effect_ : DataFrame
        Fallback effect per cell type (index) x genes.
    coexpression_ : dict of str to DataFrame
        Per cell type: correlation of every training gene (index) with each
        fitted target that is a measured gene (columns), in control cells.
    gene_set_genes_ : Index
        Upper-case symbols of the genes in ``gene_sets``.
    gene_set_membership_ : csr_matrix
        ``gene_set_genes_`` x gene sets, 1 where a gene is in a set.
    control_profiles_ : DataFrame
    perturbations_ : list of str
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    See Also
    --------
    AdditiveBaseline : The same predictor with every unseen target at the mean effect.
    LinearBaseline : A linear map from a gene-set embedding of the target.

    Notes
    -----
    Nearest-neighbour predictors over a gene knowledge graph are among the
    strongest simple predictors of unseen perturbations in published
    benchmarks (e.g. the kNN baselines of PRESAGE, Littman et al. 2025).

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.model_selection import make_query
    >>> adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=4, random_state=0)
    >>> sets = {"s1": ["G00004", "G00009"], "s2": ["G00022", "G00009", "G00001"]}
    >>> model = KNNBaseline(gene_sets=sets, coexpression_weight=0).fit(adata)
    >>> model.neighbors("G00009").round(2).to_dict()
    {'G00004': 0.5, 'G00022': 0.5}
    >>> model.predict(make_query(adata, perturbations=["G00009+G00035"])).n_obs > 0
    True
    """

    _constraints: ClassVar[dict] = {
        **_Baseline._constraints,
        "n_neighbors": Integer(low=1),
        "coexpression_weight": Real(0, 1),
        "effects": Options("singles", "joint"),
    }

    def __init__(
        self,
        *,
        gene_sets=None,
        n_neighbors: int = 5,
        coexpression_weight: float = 0.5,
        effects: str = "joint",
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
        self.gene_sets = gene_sets
        self.n_neighbors = n_neighbors
        self.coexpression_weight = coexpression_weight
        self.effects = effects

    def fit(self, adata, y=None):
        """Fit target effects, read the gene sets and the control co-expression."""
        self._training = None  # filled by _read_input: the control cells for _fit
        try:
            return super().fit(adata, y)
        finally:
            del self._training

    def _read_input(self, adata, *, training: bool):
        read = super()._read_input(adata, training=training)
        if training and getattr(self, "_training", False) is None:
            self._training = read.data
        return read

    def _fit(self, pb) -> None:
        deltas, groups = pb.deltas(self.control_label)
        labels = groups["perturbation"].astype(str).tolist()
        cts = groups["cell_type"].astype(str).tolist()
        self.deltas_ = pd.DataFrame(
            deltas, index=pd.MultiIndex.from_arrays([labels, cts]), columns=pb.genes
        )
        self.deltas_.index.names = ["perturbation", "cell_type"]
        effects, means = {}, {}
        if self.effects == "joint":
            for ct, (fx, _) in fit_by_cell_type(deltas, labels, cts, self.control_label).items():
                effects[ct] = pd.DataFrame(
                    fx.shared + fx.specific, index=fx.targets, columns=pb.genes
                )
                means[ct] = fx.shared
        else:
            for ct in sorted(set(cts)):
                rows = [i for i, c in enumerate(cts) if c == ct]
                singles = [
                    i for i in rows if len(split_targets(labels[i], self.control_label)) == 1
                ]
                effects[ct] = pd.DataFrame(
                    deltas[singles], index=[labels[i] for i in singles], columns=pb.genes
                )
                means[ct] = deltas[singles or rows].mean(axis=0)
        self.target_effects_ = effects
        self.mean_effect_ = pd.DataFrame(means, index=pb.genes).T
        sets = read_gene_sets(self.gene_sets, param="gene_sets")
        self.gene_set_genes_, self.gene_set_membership_ = _membership(sets)
        self.coexpression_ = self._coexpression(self._training, pb.genes)

    def _coexpression(self, data, genes: pd.Index) -> dict[str, pd.DataFrame]:
        out = {}
        types = data.cell_types if data.cell_types is not None else np.full(data.n_obs, _ALL)
        for ct, effects in self.target_effects_.items():
            measured = [t for t in effects.index if t in genes]
            rows = np.flatnonzero(data.is_control & (types == ct))
            if not measured or self.coexpression_weight == 0 or len(rows) < 2:
                out[ct] = pd.DataFrame(index=genes, columns=pd.Index([], dtype=object), dtype=float)
                continue
            X = data[rows].X
            if isinstance(X, BackedRows):
                X = X.to_csr()
            corr = _correlation(X, genes.get_indexer(measured))
            out[ct] = pd.DataFrame(corr, index=genes, columns=measured)
        return out

    def _similarity(self, target: str, cell_type: str) -> pd.Series:
        """Similarity of ``target`` to every fitted target of ``cell_type``."""
        fitted = self.target_effects_[cell_type].index
        sim = np.zeros(len(fitted))
        genes, M = self.gene_set_genes_, self.gene_set_membership_
        q = genes.get_indexer([target.upper()])[0]
        if q >= 0 and M.shape[1]:
            rows = genes.get_indexer([f.upper() for f in fitted])
            has = rows >= 0
            F = M[rows[has]]
            inter = np.asarray((F @ M[q].T).todense()).ravel()
            union = np.asarray(F.sum(axis=1)).ravel() + M[q].sum() - inter
            sim[has] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        corr = self.coexpression_[cell_type]
        if target in corr.index and len(corr.columns):
            w = float(self.coexpression_weight)
            pos = fitted.get_indexer(corr.columns)
            sim[pos] = (1 - w) * sim[pos] + w * np.clip(corr.loc[target].to_numpy(float), 0, None)
        return pd.Series(sim, index=fitted)

    def neighbors(self, target: str, *, cell_type: str | None = None) -> pd.Series:
        """The fitted targets an unseen ``target`` is averaged over, with their weights.

        Parameters
        ----------
        target : str
            A gene symbol.
        cell_type : str, optional
            Required when the model was fitted with several cell types.

        Returns
        -------
        Series
            Neighbour -> weight (summing to 1), most similar first; empty when
            ``target`` has no neighbour (it then gets the mean effect).
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if cell_type is None:
            if len(self.target_effects_) > 1:
                raise ValueError(
                    f"pass `cell_type=`; the model was fitted on {sorted(self.target_effects_)}."
                )
            cell_type = next(iter(self.target_effects_))
        sim = self._similarity(target, cell_type).drop(target, errors="ignore")
        sim = sim[sim > _MIN_SIMILARITY].sort_values(ascending=False, kind="stable")[
            : self.n_neighbors
        ]
        return sim / sim.sum() if len(sim) else sim

    def _effect(self, target: str, cell_type: str) -> np.ndarray:
        effects = self.target_effects_[cell_type]
        if target in effects.index:
            return effects.loc[target].to_numpy()
        weights = self.neighbors(target, cell_type=cell_type)
        if weights.empty:
            return self.mean_effect_.loc[cell_type].to_numpy()
        return weights.to_numpy() @ effects.loc[weights.index].to_numpy()

    def _delta(self, label: str, cell_type: str) -> np.ndarray:
        if (label, cell_type) in self.deltas_.index:
            return self.deltas_.loc[(label, cell_type)].to_numpy()
        targets = split_targets(label, self.control_label) or [label]
        return np.sum([self._effect(t, cell_type) for t in targets], axis=0)
