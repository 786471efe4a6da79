"""Gene-gene neighbour graphs for sparse attention, and the gene features behind them.

Every gene gets exactly ``n_neighbors`` neighbours (itself first), drawn from
two sources:

* **prior knowledge**: genes that share gene sets. The gene x set membership
  matrix is reduced by a truncated SVD (sets weighted by ``1/sqrt(size)``, so
  huge GO terms do not swamp specific ones) and neighbours are the nearest
  genes in that embedding (cosine). This never builds the dense gene x gene
  co-membership matrix, which for GO BP at 18,000 genes would be ~1.3 GB.
* **co-expression**: the nearest genes by cosine of their PCA loadings on the
  training cells (PCA of the sparse matrix, implicitly centred), i.e. genes
  whose expression moves together.

A fixed degree keeps the attention weights a dense ``(genes, K)`` block, so a
softmax over neighbours is an ordinary softmax and the CSR pattern is regular.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from sktx.genesets import read_gene_sets

__all__ = [
    "GeneGraph",
    "build_gene_graph",
    "gene_set_embedding",
    "hash_genes",
    "pca_gene_loadings",
    "prior_gene_sets",
]

# Cells used for the co-expression PCA: enough for stable loadings, bounded cost.
_PCA_MAX_CELLS = 4000
# Gene-set SVD results keyed by the gene sets' identity; GO BP takes seconds to reduce.
_SVD_CACHE: dict[tuple, tuple[list[str], np.ndarray]] = {}


@dataclass(frozen=True)
class GeneGraph:
    """A fixed-degree directed gene graph: row ``g`` lists the genes ``g`` attends to.

    Attributes
    ----------
    genes : list of str
        Gene symbols, in the order of the rows.
    neighbors : ndarray of int64, shape (n_genes, n_neighbors)
        Column indices; ``neighbors[g, 0] == g`` (self-loop).
    source : ndarray of int8, shape (n_genes, n_neighbors)
        0 = self, 1 = prior knowledge (shared gene sets), 2 = co-expression.
    """

    genes: list[str]
    neighbors: np.ndarray
    source: np.ndarray = field(repr=False)

    @property
    def n_neighbors(self) -> int:
        """Neighbours per gene, self-loop included."""
        return int(self.neighbors.shape[1])

    def to_csr(self) -> sp.csr_matrix:
        """The graph as a 0/1 CSR matrix (row = attending gene)."""
        n, k = self.neighbors.shape
        indptr = np.arange(0, n * k + 1, k)
        data = np.ones(n * k, dtype=np.float32)
        return sp.csr_matrix((data, self.neighbors.ravel(), indptr), shape=(n, n))

    def neighbors_of(self, gene: str) -> dict[str, str]:
        """Neighbours of ``gene`` mapped to the source of the edge."""
        g = self.genes.index(gene)
        names = {0: "self", 1: "prior", 2: "coexpression"}
        return {
            self.genes[j]: names[int(s)]
            for j, s in zip(self.neighbors[g], self.source[g], strict=True)
        }


def hash_genes(genes: Sequence[str], n_buckets: int = 2**14, n_hashes: int = 2) -> np.ndarray:
    """Deterministic hash buckets of gene symbols (independent of Python's salted ``hash``).

    Parameters
    ----------
    genes : sequence of str
        Gene symbols.
    n_buckets : int, default=2**14
        Buckets per hash function.
    n_hashes : int, default=2
        Hash functions; hash ``i`` returns buckets in ``[i * n_buckets, (i + 1) * n_buckets)``
        so one embedding table of ``n_hashes * n_buckets`` rows serves all of them.

    Returns
    -------
    ndarray of int64, shape (len(genes), n_hashes)

    Examples
    --------
    >>> hash_genes(["GATA1", "GATA1"]).tolist()[0] == hash_genes(["GATA1"]).tolist()[0]
    True
    """
    out = np.empty((len(genes), n_hashes), dtype=np.int64)
    for i, gene in enumerate(genes):
        raw = str(gene).upper().encode()
        for h in range(n_hashes):
            out[i, h] = h * n_buckets + zlib.crc32(raw, h * 0x9E3779B1 & 0xFFFFFFFF) % n_buckets
    return out


def prior_gene_sets(gene_sets=None) -> dict[str, list[str]]:
    """Read the ``gene_sets`` argument into ``{name: [genes]}``.

    Parameters
    ----------
    gene_sets : None, False, str, path, dict or list of those
        Read by :func:`sktx.genesets.read_gene_sets` (the one ``gene_sets``
        grammar): ``None``: the built-in curated lists
        (``sktx.genesets.BUILTIN_GENE_SETS``); ``False``: no prior; a GMT file
        (every term), ``"file.gmt::TERM"`` or a one-gene-per-line text file; a
        dict of name -> genes (or a path); or a list mixing these.

    Returns
    -------
    dict of str to list of str

    Examples
    --------
    >>> prior_gene_sets({"a": ["X", "Y"]})
    {'a': ['X', 'Y']}
    """
    return read_gene_sets(gene_sets)


def gene_set_embedding(
    sets: Mapping[str, Sequence[str]], n_components: int = 32, *, random_state: int = 0
) -> tuple[list[str], np.ndarray]:
    """Embed every gene of ``sets`` by a truncated SVD of the membership matrix.

    Parameters
    ----------
    sets : mapping of str to sequence of str
        Gene sets.
    n_components : int, default=32
        Width of the embedding; columns beyond the rank are zero so the width
        is always ``n_components``.
    random_state : int, default=0
        Seed of the randomized SVD (fixed so embeddings are reproducible).

    Returns
    -------
    genes : list of str
        Every gene that appears in a set (upper-cased symbols).
    embedding : ndarray of float32, shape (len(genes), n_components)
        Rows scaled to unit norm (zero rows stay zero).

    Examples
    --------
    >>> genes, emb = gene_set_embedding({"a": ["X", "Y"], "b": ["Y", "Z"]}, 4)
    >>> emb.shape
    (3, 4)
    """
    from sklearn.utils.extmath import randomized_svd

    key = (n_components, random_state, tuple((k, tuple(v)) for k, v in sorted(sets.items())))
    cached = _SVD_CACHE.get(key)
    if cached is not None:
        return cached
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for j, (_, genes) in enumerate(sorted(sets.items())):
        # sorted: set order follows Python's salted str hash, so the rows (and the
        # SVD's float rounding) would change from one process to the next
        members = sorted({g.upper() for g in genes})
        if not members:
            continue
        w = 1.0 / np.sqrt(len(members))
        for g in members:
            rows.append(vocab.setdefault(g, len(vocab)))
            cols.append(j)
            vals.append(w)
    genes = list(vocab)
    emb = np.zeros((len(genes), n_components), dtype=np.float32)
    if genes:
        M = sp.csr_matrix((vals, (rows, cols)), shape=(len(genes), len(sets)))
        k = max(1, min(n_components, min(M.shape) - 1))
        if min(M.shape) > 1:
            U, S, _ = randomized_svd(M, k, random_state=random_state, n_iter=4)
            emb[:, :k] = (U * S).astype(np.float32)
        else:
            emb[:, 0] = M.toarray()[:, 0]
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, norm, out=np.zeros_like(emb), where=norm > 0)
    _SVD_CACHE[key] = (genes, emb)
    return genes, emb


#: Above this many genes a sparse matrix is densified for a randomized PCA (below, ARPACK).
_PCA_ARPACK_MAX_GENES = 5000


def pca_gene_loadings(X, n_components: int = 16, *, rows=None, random_state=0) -> np.ndarray:
    """Gene loadings of a PCA of the cells (sparse input stays sparse).

    Parameters
    ----------
    X : ndarray, sparse matrix or row reader of shape (n_cells, n_genes)
        log1p expression; at most 4,000 cells (drawn at random) are used, so
        a backed file (:class:`sktx.data.BackedRows`) is read for those rows only.
        Sparse input of up to 5,000 genes is decomposed by ARPACK, larger
        panels densified (float32) for a randomized PCA, which is faster there.
    rows : array of int, optional
        Decompose only these cells (e.g. the controls); default all.
    n_components : int, default=16
        Output width; components beyond the rank are zero.
    random_state : int or RandomState, default=0

    Returns
    -------
    ndarray of float32, shape (n_genes, n_components)
        ``components_.T * sqrt(explained_variance_)``, signs fixed by sklearn's
        ``svd_flip`` convention (deterministic).

    Examples
    --------
    >>> import numpy as np
    >>> pca_gene_loadings(np.random.RandomState(0).rand(50, 8), 3).shape
    (8, 3)
    """
    from sklearn.decomposition import PCA
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    n_genes = X.shape[1]
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) > _PCA_MAX_CELLS:
        X = X[np.sort(rng.choice(rows, _PCA_MAX_CELLS, replace=False))]
    elif len(rows) < X.shape[0] or not (sp.issparse(X) or isinstance(X, np.ndarray)):
        X = X[rows]  # a subset, or a row reader of a backed file (sktx.data.BackedRows)
    out = np.zeros((n_genes, n_components), dtype=np.float32)
    k = min(n_components, X.shape[0] - 1, n_genes - 1)
    if k < 1:
        return out
    if sp.issparse(X) and n_genes <= _PCA_ARPACK_MAX_GENES:
        X = sp.csr_matrix(X, dtype=np.float64)
        solver = "arpack"
    elif sp.issparse(X):
        # ARPACK's iterations cost grows with the genes (55 s at 18,080 genes x 4,000
        # cells here); the dense randomized PCA of <= 4,000 cells is ~4x faster and its
        # float32 copy is 290 MB at 18,080 genes
        X = X.toarray().astype(np.float32, copy=False)
        solver = "randomized"
    else:
        X = np.asarray(X, dtype=np.float64)
        solver = "randomized" if min(X.shape) > 200 else "full"
    pca = PCA(k, svd_solver=solver, random_state=rng.randint(2**31 - 1))
    pca.fit(X)
    out[:, :k] = (pca.components_.T * np.sqrt(pca.explained_variance_)).astype(np.float32)
    return out


#: Rows of the similarity matrix computed at once by :func:`_cosine_knn` (1024 x 18,080
#: float64 is 148 MB).
_KNN_CHUNK = 1024
#: Decimals kept of the neighbour scores, so that rows equal up to float rounding tie.
_KNN_DECIMALS = 9


def _cosine_knn(emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest rows by cosine, self excluded; ties go to the lower index.

    The score is minus the squared Euclidean distance between the unit rows
    (zero rows stay zero), the order ``NearestNeighbors`` gave before. It is
    computed here because ``NearestNeighbors`` orders exactly tied neighbours
    differently with 1 and 2 threads, and gene-set embeddings are full of exact
    ties (genes in the same sets): the same seeded fit built a different graph
    from one run to the next. Scores are rounded to
    ``_KNN_DECIMALS`` decimals so that rows equal up to BLAS rounding tie too.

    Examples
    --------
    >>> import numpy as np
    >>> _cosine_knn(np.array([[1.0, 0], [1, 0], [0, 1], [1, 0]]), 2).tolist()
    [[1, 3], [0, 3], [0, 1], [0, 1]]
    """
    n = emb.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((n, 0), dtype=np.int64)
    emb = np.asarray(emb, dtype=np.float64)
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norm, out=np.zeros_like(emb), where=norm > 0)
    sq = np.einsum("ij,ij->i", unit, unit)
    # -|u - v|^2 = 2 u.v - |u|^2 - |v|^2; |u|^2 is the same along a row, so dropped
    scale = 10.0**_KNN_DECIMALS
    right = unit.T * (2.0 * scale)
    offset = sq * scale
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _KNN_CHUNK):
        stop = min(n, start + _KNN_CHUNK)
        score = unit[start:stop] @ right
        score -= offset
        # integer-valued after this, so rows equal up to float rounding tie exactly
        np.rint(score, out=score)
        local = np.arange(stop - start)
        score[local, local + start] = -np.inf
        top = np.argpartition(score, n - k, axis=1)[:, n - k :]
        kth = score[local, top[:, 0]][:, None]  # the k-th largest per row
        # rows with more ties at the k-th score than places left: lowest indices first
        for r in np.flatnonzero((score >= kth).sum(axis=1) > k):
            above = np.flatnonzero(score[r] > kth[r, 0])
            tied = np.flatnonzero(score[r] == kth[r, 0])[: k - above.size]
            top[r] = np.concatenate([above, tied])
        # best first; equal scores by index
        order = np.lexsort((top, -np.take_along_axis(score, top, axis=1)), axis=1)
        out[start:stop] = np.take_along_axis(top, order, axis=1)
    return out


def build_gene_graph(
    X,
    genes: Sequence[str],
    *,
    n_neighbors: int = 16,
    gene_sets=None,
    prior_fraction: float = 0.5,
    n_components: int = 16,
    loadings: np.ndarray | None = None,
    random_state=0,
) -> GeneGraph:
    """Build the fixed-degree attention graph: self + prior edges + co-expression kNN.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_cells, n_genes)
        Training expression (log1p); used for the co-expression neighbours.
    genes : sequence of str
        Gene symbols of the columns of ``X``.
    n_neighbors : int, default=16
        Neighbours per gene including itself (clipped to the number of genes).
    gene_sets : see :func:`prior_gene_sets`
        Prior knowledge; genes sharing sets become neighbours.
    prior_fraction : float, default=0.5
        Share of the non-self neighbours taken from the prior (for genes
        present in any set); the rest, and any shortfall, is co-expression.
    n_components : int, default=16
        Width of the PCA used for co-expression.
    loadings : ndarray, optional
        Precomputed :func:`pca_gene_loadings` of ``X`` (saves one PCA).
    random_state : int or RandomState, default=0

    Returns
    -------
    GeneGraph

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.RandomState(0).rand(40, 10)
    >>> g = build_gene_graph(X, [f"G{i}" for i in range(10)], n_neighbors=4, gene_sets=False)
    >>> g.neighbors.shape, bool((g.neighbors[:, 0] == np.arange(10)).all())
    ((10, 4), True)
    """
    genes = [str(g) for g in genes]
    n = len(genes)
    k_total = max(1, min(int(n_neighbors), n))
    if loadings is None:
        loadings = pca_gene_loadings(X, n_components, random_state=random_state)
    coexp = _cosine_knn(loadings, k_total - 1)
    if n > 1 and not np.any(loadings):
        # no variance at all: fall back to a deterministic ring so shapes stay fixed
        coexp = (np.arange(n)[:, None] + np.arange(1, k_total)[None, :]) % n

    prior = np.full((n, 0), -1, dtype=np.int64)
    sets = prior_gene_sets(gene_sets)
    n_prior = round(prior_fraction * (k_total - 1)) if sets else 0
    has_prior = np.zeros(n, dtype=bool)
    if n_prior > 0:
        set_genes, emb = gene_set_embedding(sets)
        row_of = {g: i for i, g in enumerate(set_genes)}
        local = np.array([row_of.get(g.upper(), -1) for g in genes])
        has_prior = local >= 0
        panel = np.flatnonzero(has_prior)
        if panel.size > 1:
            knn = _cosine_knn(emb[local[panel]], min(n_prior, panel.size - 1))
            prior = np.full((n, knn.shape[1]), -1, dtype=np.int64)
            prior[panel] = panel[knn]

    neighbors = np.empty((n, k_total), dtype=np.int64)
    source = np.empty((n, k_total), dtype=np.int8)
    for g in range(n):
        chosen = {g: 0}
        if has_prior[g]:
            for j in prior[g][:n_prior]:
                if j >= 0 and j not in chosen:
                    chosen[int(j)] = 1
        for j in coexp[g]:
            if len(chosen) >= k_total:
                break
            if int(j) not in chosen:
                chosen[int(j)] = 2
        # rare shortfall (duplicates between sources): wrap around deterministically
        j = g
        while len(chosen) < k_total:
            j = (j + 1) % n
            if j not in chosen:
                chosen[j] = 2
        neighbors[g] = list(chosen)
        source[g] = list(chosen.values())
    return GeneGraph(genes=genes, neighbors=neighbors, source=source)
