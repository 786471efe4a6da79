"""What a fitted :class:`~sktx.PerturbationRegressor` knows besides its weights.

A plain dataclass of numpy arrays and lists, held by the estimator
(``fitted_state_``), never by the torch module: the module sees tensors only.
``save_params`` writes it beside the weights as tensors, so
``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import contextvars
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from sktx.data import group_means, nonzero_level, split_targets
from sktx.genesets import read_gene_sets
from sktx.graph import (
    _PCA_MAX_CELLS,
    build_gene_graph,
    gene_set_embedding,
    hash_genes,
    pca_gene_loadings,
)

__all__ = [
    "N_FEATURES",
    "FittedState",
    "build_state",
    "final_tokens",
    "gene_features",
    "gene_loadings",
    "shared_loadings",
]

_N_PCA = 16
_N_PRIOR = 32
#: fewer control cells than this: the PCA of the gene features runs on all fitted cells
_MIN_PCA_CONTROLS = 50
#: Width of the per-gene feature vector: PCA loadings, prior embedding, two "known" flags.
N_FEATURES = _N_PCA + _N_PRIOR + 2


@dataclass
class FittedState:
    """Data-derived state of a fitted regressor (genes, graph, features, baseline inputs).

    Attributes
    ----------
    genes : list of str
        Fitted genes (the panel), in order.
    prior_genes : list of str
        Upper-case symbols with a prior (gene-set) embedding.
    pca, prior_emb : ndarray
        Gene loadings (genes x 16) and prior embeddings (prior genes x 32).
    cell_types : list of str
        Cell types with fitted controls; ``ctrl_means`` holds their control means.
    ctrl_means, nonzero_level : ndarray
        Control mean per cell type (float32) and each gene's typical non-zero level.
    delta_labels, delta_cts : list of str
        Label and cell type of each fitted group; ``deltas`` their pseudobulk deltas.
    deltas : ndarray
    train_targets : list of str
        Targets perturbed in the training (not validation) groups.
    gene_hash, gene_feat, neighbors : ndarray
        Module inputs of the panel: hashed symbols, features, attention graph
        (over ``tokens`` when set).
    set_genes, set_indptr, set_indices : list of str, ndarray, ndarray
        Gene-set membership (upper-case genes x sets, CSR without values) read
        at fit time, for the start's target similarity
        (:mod:`sktx.regressor._start`); empty without gene sets.
    coexpr_targets : list of str
        Fitted targets that are measured genes.
    coexpr : ndarray of shape (n_genes, len(coexpr_targets)) or None
        Correlation of every gene with each of them in the control cells
        (centred per cell type), for the start's target similarity; None in
        models saved before it was stored (the PCA loadings stand in).
    start : str
        The ``start`` of the fit (``"shrunk"`` in models saved before it existed).
    tokens : ndarray or None
        Indices (into ``genes``, ascending) of the genes the network runs on when
        the panel has more than ``max_tokens`` genes; None: all genes.
    residual_scale : float
        Factor applied to the learned residual at prediction.
    members : list of dict
        Weights (``state_dict``) of each cross-fitted network (``crossfit >= 2``);
        predictions average their residuals. Empty for a single network.
    gene_scale : ndarray or None
        Per-gene residual factors fitted out of fold (``crossfit >= 2``), used
        with ``residual_shrinkage="gene"``.
    """

    genes: list[str]
    prior_genes: list[str]
    pca: np.ndarray
    prior_emb: np.ndarray
    cell_types: list[str]
    ctrl_means: np.ndarray
    nonzero_level: np.ndarray
    delta_labels: list[str]
    delta_cts: list[str]
    deltas: np.ndarray
    train_targets: list[str]
    gene_hash: np.ndarray
    gene_feat: np.ndarray
    neighbors: np.ndarray
    residual_scale: float = 1.0
    tokens: np.ndarray | None = None
    set_genes: list = field(default_factory=list)
    set_indptr: np.ndarray | None = None
    set_indices: np.ndarray | None = None
    coexpr_targets: list = field(default_factory=list)
    coexpr: np.ndarray | None = None
    start: str = "shrunk"
    members: list = field(default_factory=list, repr=False, compare=False)
    gene_scale: np.ndarray | None = field(default=None, repr=False, compare=False)
    gene_row: dict = field(init=False, repr=False, compare=False)
    prior_row: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.gene_row = {g: i for i, g in enumerate(self.genes)}
        self.prior_row = {g: i for i, g in enumerate(self.prior_genes)}

    def membership(self):
        """``(genes, CSR matrix)`` of the stored gene-set membership, or None if not stored."""
        if self.set_indptr is None:
            return None
        if not self.set_genes:
            return None, None
        import scipy.sparse as sp

        n_sets = int(self.set_indices.max()) + 1 if len(self.set_indices) else 0
        data = np.ones(len(self.set_indices))
        M = sp.csr_matrix(
            (data, self.set_indices, self.set_indptr), shape=(len(self.set_genes), n_sets)
        )
        return list(self.set_genes), M

    def to_tensors(self) -> dict:
        """Arrays as tensors, lists and floats as they are (``weights_only`` loadable)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = (
                    torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                )
        return out

    @classmethod
    def from_tensors(cls, saved: dict) -> FittedState:
        fields = [f for f in dataclasses.fields(cls) if f.init]
        names = {f.name for f in fields}
        # fields with a default (added later) may be absent from older files
        missing_default = dataclasses.MISSING
        required = {
            f.name
            for f in fields
            if f.default is missing_default and f.default_factory is missing_default
        }
        missing = sorted(required - set(saved))
        if missing:
            raise ValueError(
                f"the saved model state lacks {missing}; it was written by another version "
                "of sktx. Refit the model, or load it with the version that saved it."
            )
        return cls(
            **{
                k: v.cpu().numpy() if torch.is_tensor(v) else v
                for k, v in saved.items()
                if k in names
            }
        )


def gene_features(symbols, state) -> np.ndarray:
    """Fixed-width features of any gene symbols (zero where nothing is known)."""
    out = np.zeros((len(symbols), N_FEATURES), dtype=np.float32)
    for i, s in enumerate(symbols):
        g = state.gene_row.get(s)
        if g is not None:
            out[i, :_N_PCA] = state.pca[g]
            out[i, -2] = 1.0
        p = state.prior_row.get(s.upper())
        if p is not None:
            out[i, _N_PCA : _N_PCA + _N_PRIOR] = state.prior_emb[p]
            out[i, -1] = 1.0
    return out


def choose_tokens(deltas, train_rows, targets, genes, max_tokens):
    """Genes the network runs on: measured training targets, then the most responsive genes.

    A gene's response is its mean squared pseudobulk delta over the training
    groups: where perturbations move nothing, a learned residual has nothing to
    add to the start (and the cross-fitted shrinkage would remove it anyway),
    so the network's cost goes where the data move.

    Returns None when every gene fits (``max_tokens`` None or >= the panel).

    Examples
    --------
    >>> import numpy as np
    >>> deltas = np.array([[0.0, 3.0, 0.1, 1.0], [0.0, 2.0, 0.1, -1.0]])
    >>> choose_tokens(deltas, [0, 1], ["G0"], ["G0", "G1", "G2", "G3"], 2).tolist()
    [0, 1]
    """
    n = len(genes)
    if max_tokens is None or n <= max_tokens:
        return None
    score = np.square(deltas[list(train_rows)], dtype=np.float64).mean(0)
    row = {g: i for i, g in enumerate(genes)}
    first = sorted({row[t] for t in targets if t in row})[:max_tokens]
    score[first] = np.inf  # a target's own knock-down is where its effect is largest
    # stable sort: ties (e.g. genes never moved) keep panel order, so fits are reproducible
    order = np.argsort(-score, kind="stable")[:max_tokens]
    return np.sort(order).astype(np.int64)


@dataclass(frozen=True)
class _Shared:
    """What a ProgressiveFit hands every phase (see `shared_loadings`)."""

    genes: list[str]
    row: dict[str, int]
    loadings: np.ndarray
    scale: float
    n_cells: int
    tokens: frozenset[str] | None


_SHARED = contextvars.ContextVar("sktx_shared_loadings", default=None)


@contextmanager
def shared_loadings(genes, loadings, n_cells: int, tokens=None):
    """Within the block, ``build_state`` takes its PCA gene loadings from ``loadings``.

    ``tokens`` (gene names, optional): the last phase's token genes. A fit on a
    smaller panel then runs its network on the panel's genes among them, so every
    gene an early phase trains is one the last phase runs on (a gene curriculum
    whose phases each picked their own most-moved genes changed half of its
    tokens at the last phase, docs/progressive.md).

    :class:`~sktx.ProgressiveFit` fits the PCA once on the last phase's panel and
    gives every phase the rows of its genes: no phase pays for a PCA, and a gene
    has the same features (so the same learned feature embedding) in every phase.
    A fit whose cells differ in number, or with a gene outside ``genes``, runs its
    own PCA as usual.

    Examples
    --------
    >>> import numpy as np
    >>> with shared_loadings(["A", "B"], np.ones((2, 16), np.float32), 10):
    ...     _SHARED.get().genes
    ['A', 'B']
    """
    row = {str(g): i for i, g in enumerate(genes)}
    loadings = np.asarray(loadings, dtype=np.float32)
    # the scale of the whole panel, so a gene's features do not change with the phase
    scale = float(np.sqrt(np.mean(loadings**2))) or 1.0
    final = None if tokens is None else frozenset(map(str, tokens))
    token = _SHARED.set(_Shared(list(genes), row, loadings, scale, int(n_cells), final))
    try:
        yield
    finally:
        _SHARED.reset(token)


def gene_loadings(X, is_control, random_state) -> np.ndarray:
    """PCA gene loadings of the control cells (all cells when controls are fewer than 50).

    Co-expression from the controls, as KNNBaseline's: loadings of all fitted cells
    would carry every fitted perturbation's effect into its own target's features,
    which a target unseen in training cannot have.
    """
    ctrl = np.flatnonzero(is_control)
    rows = ctrl if len(ctrl) >= _MIN_PCA_CONTROLS else None
    return pca_gene_loadings(X, _N_PCA, rows=rows, random_state=random_state)


def control_coexpression(X, data, genes, targets) -> tuple[list[str], np.ndarray]:
    """``(measured targets, corr)``: every gene's correlation with them in the controls.

    Pearson correlation over the control cells (at most 4,000, drawn with seed 0, so
    it does not move with the fit's ``random_state``), centred within each cell type
    (KNNBaseline's co-expression, pooled over cell types), float32 of shape
    (n_genes, n_measured_targets).
    """
    from sktx.baselines._knn import _correlation

    row = {g: i for i, g in enumerate(genes)}
    measured = [t for t in targets if t in row]
    ctrl = np.flatnonzero(data.is_control)
    if not measured or len(ctrl) < 2:
        return [], np.zeros((len(genes), 0), dtype=np.float32)
    if len(ctrl) > _PCA_MAX_CELLS:
        ctrl = np.sort(np.random.RandomState(0).choice(ctrl, _PCA_MAX_CELLS, replace=False))
    _, codes = np.unique(np.asarray(data.contexts)[ctrl], return_inverse=True)
    corr = _correlation(X[ctrl], np.array([row[t] for t in measured]), codes)
    return measured, corr.astype(np.float32)


def _pca(X, genes, rng, is_control):
    """``(raw loadings, scale)`` of the panel: shared ones (``shared_loadings``) or a PCA."""
    seed = rng.randint(2**31 - 1)  # drawn either way: the later draws stay the same
    shared = _SHARED.get()
    if shared is not None and X.shape[0] == shared.n_cells:
        rows = [shared.row.get(g) for g in genes]
        if None not in rows:
            return shared.loadings[rows], shared.scale
    pca = gene_loadings(X, is_control, seed)
    return pca, float(np.sqrt(np.mean(pca**2))) or 1.0


def _pseudobulk_deltas(X, data, groups):
    """``(cell types with controls, their control means, every group's delta)``."""
    labels, is_control, cts = data.labels, data.is_control, data.contexts
    ct_names = sorted(set(cts[is_control].tolist()))
    ct_code = {c: i for i, c in enumerate(ct_names)}
    codes = np.full(len(labels), -1)
    ctrl_code = np.array([ct_code.get(c, -1) for c in cts])
    codes[is_control] = ctrl_code[is_control]
    ctrl_means = group_means(X, codes, len(ct_names))
    codes = np.full(len(labels), -1)
    for j, rows in enumerate(groups.rows):
        codes[rows] = j
    means = group_means(X, codes, len(groups.rows))
    deltas = np.stack(
        [means[j] - ctrl_means[ct_code[ct]] for j, ct in enumerate(groups.cell_types)]
    )
    return ct_names, ctrl_means, deltas


def final_tokens(X, data, genes, max_tokens) -> list[str] | None:
    """The genes a fit on this panel runs its network on, every perturbation counted.

    :func:`choose_tokens` over all fitted perturbations (a fit leaves its validation
    ones out, so its own choice can differ by a few genes); None when every gene
    fits, or when the data cannot be fitted (the fit then says why).
    """
    groups = data.groups
    if max_tokens is None or len(genes) <= max_tokens or not groups.labels:
        return None
    if set(groups.cell_types) - set(data.contexts[data.is_control].tolist()):
        return None
    _, _, deltas = _pseudobulk_deltas(X, data, groups)
    control = data.control_label
    targets = sorted({t for lab in groups.labels for t in split_targets(lab, control)})
    tokens = choose_tokens(deltas, range(len(groups.labels)), targets, genes, max_tokens)
    return None if tokens is None else [genes[i] for i in tokens]


def build_state(
    X, data, groups, train_ids, rng, *, n_neighbors, gene_sets, max_tokens=None, start="shrunk"
):
    """Fit the gene features, graph and baseline inputs of one ``fit`` call.

    Parameters
    ----------
    X : csr_matrix or BackedRows
        float32 log1p rows of ``data``.
    data : PerturbationData
        The prepared training data.
    groups : CellGroups
        Its (label, cell type) groups.
    train_ids : list of int
        Groups trained on (the rest validate).
    rng : RandomState
        Seeds the PCA.
    n_neighbors : int
    gene_sets : gene-set spec
        Prior knowledge for graph edges and embeddings.
    max_tokens : int or None
        At most this many genes for the network (:func:`choose_tokens`).
    start : {"shrunk", "knn"}
        The regressor's ``start`` (stored: predictions use the start it was fitted with).

    Returns
    -------
    state : FittedState
    graph : GeneGraph
    """
    genes = [str(g) for g in data.genes]
    pca, scale = _pca(X, genes, rng, data.is_control)
    sets = read_gene_sets(gene_sets)  # parsed once per process (cached on path + mtime)
    prior_genes, prior_emb = gene_set_embedding(sets, _N_PRIOR) if sets else ([], None)
    if prior_emb is None:
        prior_emb = np.zeros((0, _N_PRIOR), dtype=np.float32)
    raw_pca, pca = pca, pca / scale
    # unit-norm rows -> entries of order one
    prior_emb = prior_emb * np.sqrt(_N_PRIOR)

    # The baseline is fitted on every fitted perturbation, validation ones included:
    # a perturbation's own baseline is the fit without it, so validation stays
    # honest, and the effects for unseen perturbations rest on all the data.
    ct_names, ctrl_means, deltas = _pseudobulk_deltas(X, data, groups)
    control = data.control_label
    train_targets = sorted({t for i in train_ids for t in split_targets(groups.labels[i], control)})
    shared = _SHARED.get()
    if shared is not None and shared.tokens and len(genes) < len(shared.genes):
        # an early phase of a ProgressiveFit: the last phase's token genes in this panel
        keep = np.flatnonzero([g in shared.tokens for g in genes])
        tokens = keep.astype(np.int64) if 0 < len(keep) < len(genes) else None
    else:
        tokens = choose_tokens(deltas, train_ids, train_targets, genes, max_tokens)
    sub = slice(None) if tokens is None else tokens
    # the graph joins the genes the network runs on (cheaper too: its kNN is over them only)
    graph = build_gene_graph(
        X,
        genes if tokens is None else [genes[i] for i in tokens],
        n_neighbors=n_neighbors,
        gene_sets=gene_sets,
        loadings=raw_pca[sub],
        random_state=0,
    )
    from sktx.regressor._start import set_membership

    set_genes, M = set_membership(sets)  # the sets read above, not the files again
    fitted_targets = sorted({t for lab in groups.labels for t in split_targets(lab, control)})
    coexpr_targets, coexpr = control_coexpression(X, data, genes, fitted_targets)
    state = FittedState(
        genes=genes,
        prior_genes=list(prior_genes),
        pca=pca,
        prior_emb=prior_emb,
        cell_types=ct_names,
        ctrl_means=ctrl_means.astype(np.float32),
        nonzero_level=nonzero_level(X),
        delta_labels=list(groups.labels),
        delta_cts=list(groups.cell_types),
        deltas=deltas.astype(np.float32),
        train_targets=train_targets,
        gene_hash=hash_genes(genes),
        gene_feat=np.zeros((len(genes), N_FEATURES), dtype=np.float32),
        neighbors=graph.neighbors,
        tokens=tokens,
        set_genes=set_genes or [],
        set_indptr=np.zeros(1, np.int64) if M is None else M.indptr.astype(np.int64),
        set_indices=np.zeros(0, np.int64) if M is None else M.indices.astype(np.int64),
        coexpr_targets=coexpr_targets,
        coexpr=coexpr,
        start=start,
    )
    # features read the state's own gene/prior rows, so they are filled in last
    state.gene_feat = gene_features(genes, state)
    return state, graph
