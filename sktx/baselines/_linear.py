"""LinearBaseline: the low-rank linear model of Ahlmann-Eltze, Huber & Anders (2025)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx._docs import doc_params
from sktx._params import Integer, Real
from sktx.baselines._base import _Baseline, split_targets
from sktx.genesets import read_gene_sets

__all__ = ["LinearBaseline"]


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


@doc_params
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
    prior_gene_sets : str, Path, dict or list, optional
        Gene sets in the ``gene_sets`` grammar of
        :func:`sktx.genesets.read_gene_sets` (a GMT file, ``"file.gmt::TERM"``,
        ``{set name: genes}``, a list of these), except that ``None`` (the
        default) and ``False`` mean no prior. Their gene x set membership
        matrix is reduced by truncated SVD to ``n_prior_components``
        dimensions; used when ``gene_embedding`` is None.
    n_prior_components : int, default=10
        Dimensions kept from ``prior_gene_sets``.
    {doc_keys}
    cell_type_key : str, optional
        Deltas and b per cell type; G and W are shared.
    {doc_cells}

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

    _constraints: ClassVar[dict] = {
        **_Baseline._constraints,
        "n_components": Integer(low=1),
        "n_prior_components": Integer(low=1),
        "ridge": Real(low=0),
    }

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

    def _check_embedding(self) -> None:
        # the numeric parameters are checked by `_Baseline.fit` (sktx._params)
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
            return None  # no prior here; in the gene_sets grammar None means the built-ins
        try:
            sets = read_gene_sets(self.prior_gene_sets, param="prior_gene_sets")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"`prior_gene_sets`: {exc}") from None
        if not sets:
            return None
        if len(sets) < 2:
            raise ValueError(
                f"`prior_gene_sets` holds {len(sets)} gene set ({list(sets)}); the prior "
                "embedding needs at least 2. A GMT file must be named '*.gmt'."
            )
        return _prior_embedding(sets, self.n_prior_components)

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
        self._check_embedding()
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
