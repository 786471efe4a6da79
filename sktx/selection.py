"""GeneSelector: choose the genes a model sees, by prior knowledge and data evidence."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from sktx._backed import backed_rows, column_moments, is_backed
from sktx._pseudobulk import pseudobulk
from sktx._validation import (
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
    split_targets,
    validate_adata,
)
from sktx.genesets import CATEGORIES, load_gene_sets, resolve_aliases

__all__ = ["QUOTA_KEYS", "GeneSelector", "default_quotas"]

#: Selection categories in priority order (earlier = placed earlier in a block).
QUOTA_KEYS: tuple[str, ...] = (
    "targets",
    "tf",
    "pluripotency",
    "cell_cycle",
    "metabolic",
    "responsive",
    "hvg",
)
_HVG_FLAVORS = ("auto", "seurat", "seurat_v3", "cell_ranger")

# The default schedule: cumulative genes per category at anchor sizes of the
# first block. The first 100 genes are the "essential" ones (targets, TFs,
# pluripotency), the next 100 add cell-cycle and metabolic regulators and the
# first responsive genes, the rest of the block responsive genes and HVGs. At
# 500 genes the curated counts are those of the seed design (46 TF, 40 cell
# cycle, 32 metabolic, 22 pluripotency). Every further block of 500 repeats
# the 500-gene composition, so quotas scale linearly with `n_genes`.
_BLOCK = 500
_DEFAULT_ANCHORS: tuple[tuple[int, dict[str, int]], ...] = (
    (100, {"targets": 34, "tf": 44, "pluripotency": 22}),
    (
        200,
        {
            "targets": 40,
            "tf": 46,
            "pluripotency": 22,
            "cell_cycle": 40,
            "metabolic": 32,
            "responsive": 20,
        },
    ),
    (
        _BLOCK,
        {
            "targets": 40,
            "tf": 46,
            "pluripotency": 22,
            "cell_cycle": 40,
            "metabolic": 32,
            "responsive": 100,
            "hvg": 220,
        },
    ),
)
# scanpy's default number of HVGs for seurat_v3; only the scores are used.
_V3_TOP = 2000


def _segment(start: float, length: float, counts: Mapping[str, int]) -> list[tuple[float, int]]:
    """Slots of one schedule segment, spread evenly (stride scheduling).

    The ``i``-th slot of category ``c`` sits at ``start + (i + a_c) * length /
    counts[c]`` with an offset ``a_c`` in (0, 1) that grows with priority
    rank; exactly ``counts[c]`` slots of ``c`` fall inside the segment.
    """
    slots = []
    for p, cat in enumerate(QUOTA_KEYS):
        n = counts.get(cat, 0)
        offset = (p + 1) / (len(QUOTA_KEYS) + 1)
        slots.extend((start + (i + offset) * length / n, p) for i in range(n))
    return slots


def _default_slots(n_total: int) -> list[int]:
    slots: list[tuple[float, int]] = []
    prev_n, prev = 0, dict.fromkeys(QUOTA_KEYS, 0)
    for n, counts in _DEFAULT_ANCHORS:
        diff = {c: counts.get(c, 0) - prev[c] for c in QUOTA_KEYS}
        slots.extend(_segment(prev_n, n - prev_n, diff))
        prev_n, prev = n, {c: counts.get(c, 0) for c in QUOTA_KEYS}
    block = _DEFAULT_ANCHORS[-1][1]
    while prev_n < n_total:
        slots.extend(_segment(prev_n, _BLOCK, block))
        prev_n += _BLOCK
    return [p for _, p in sorted(slots)][:n_total]


def _share_slots(shares: Mapping[str, float], n_total: int) -> list[int]:
    slots: list[tuple[float, int]] = []
    for p, cat in enumerate(QUOTA_KEYS):
        share = shares.get(cat, 0.0)
        if share <= 0:
            continue
        offset = (p + 1) / (len(QUOTA_KEYS) + 1)
        n = math.ceil(share * n_total) + 1
        slots.extend(((i + offset) / share, p) for i in range(n))
    return [p for _, p in sorted(slots)][:n_total]


def _slot_counts(slots: list[int], n: int) -> dict[str, int]:
    counts = np.bincount(np.asarray(slots[:n], dtype=int), minlength=len(QUOTA_KEYS))
    return {cat: int(k) for cat, k in zip(QUOTA_KEYS, counts, strict=True)}


def default_quotas(n_genes: int = 500) -> dict[str, int]:
    """Genes per category that the default schedule reserves at ``n_genes``.

    Parameters
    ----------
    n_genes : int, default=500
        Selection size.

    Returns
    -------
    dict of str to int
        Keys are :data:`QUOTA_KEYS`; values sum to ``n_genes``. Quotas a
        dataset cannot fill (e.g. few targets measured) spill to ``hvg`` when
        fitting.

    Examples
    --------
    >>> q = default_quotas(500)
    >>> q["tf"], q["cell_cycle"], q["metabolic"], q["pluripotency"]
    (46, 40, 32, 22)
    >>> default_quotas(100)["tf"]
    44
    """
    n_genes = _check_n_genes(n_genes)
    return _slot_counts(_default_slots(n_genes), n_genes)


def _check_n_genes(n_genes) -> int:
    if not isinstance(n_genes, numbers.Integral) or isinstance(n_genes, bool) or n_genes < 1:
        raise ValueError(f"`n_genes` must be a positive integer, got {n_genes!r}.")
    return int(n_genes)


def _shares_from_quotas(quotas, n_genes: int) -> dict[str, float]:
    """Turn user quotas (counts at ``n_genes`` or fractions) into shares summing to 1."""
    if not isinstance(quotas, Mapping):
        raise TypeError(
            f"`quotas` must be a dict {{category: count}}, got {type(quotas).__name__}; "
            f"e.g. `quotas={{'tf': 100, 'cell_cycle': 40}}`. Categories: {list(QUOTA_KEYS)}."
        )
    unknown = [k for k in quotas if k not in QUOTA_KEYS]
    if unknown:
        raise ValueError(f"unknown `quotas` keys {unknown}; known categories: {list(QUOTA_KEYS)}.")
    shares = {}
    for cat, value in quotas.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
            shares[cat] = int(value) / n_genes
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1:
            shares[cat] = float(value)
        else:
            raise ValueError(
                f"`quotas[{cat!r}]` must be a non-negative integer (genes at `n_genes`) or a "
                f"fraction in [0, 1], got {value!r}."
            )
    total = sum(shares.values())
    if total > 1 + 1e-9:
        raise ValueError(
            f"`quotas` ask for {round(total * n_genes)} genes but `n_genes={n_genes}`; lower "
            "the quotas or raise `n_genes`."
        )
    shares["hvg"] = shares.get("hvg", 0.0) + max(0.0, 1.0 - total)
    return shares


def _percentile(x: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] (NaN ranked lowest), used to put scores on one scale."""
    x = np.where(np.isfinite(x), x, -np.inf)
    return (rankdata(x) - 1) / max(len(x) - 1, 1)


def _order(scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Indices sorted by descending score; ties keep `var` order (deterministic)."""
    if idx is None:
        idx = np.arange(len(scores))
    s = np.where(np.isfinite(scores[idx]), scores[idx], -np.inf)
    return idx[np.argsort(-s, kind="stable")]


def _log_variance(X) -> np.ndarray:
    if sp.issparse(X):
        from sklearn.utils.sparsefuncs import mean_variance_axis

        return np.asarray(mean_variance_axis(X, axis=0)[1], dtype=np.float64)
    return np.asarray(X, dtype=np.float64).var(axis=0)


def _seurat_dispersions_norm(mean: np.ndarray, var: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """scanpy's ``flavor="seurat"`` normalised dispersions from per-gene moments.

    Same steps as ``scanpy.pp.highly_variable_genes`` (scanpy 1.11,
    ``_highly_variable_genes_single_batch``) once the mean and unbiased
    variance of ``expm1(X)`` are known, so they can be accumulated over row
    chunks of a backed file.
    """
    mean = np.array(mean, dtype=np.float64)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()  # a bin with a single gene: its dispersion_norm is 1
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    return ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy(dtype=np.float64)


def _seurat_scores(X, log_base: float | None) -> np.ndarray:
    """Seurat normalised dispersions of log1p data ``X`` (matrix or backed reader)."""
    moments = column_moments(X, log_base=log_base)
    return _seurat_dispersions_norm(moments["mean_expm1"], moments["var_expm1"])


def _has_skmisc() -> bool:
    try:
        import skmisc.loess  # noqa: F401
    except ImportError:
        return False
    return True


class GeneSelector(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Select genes by category quotas: targets, TFs, cell cycle, metabolism, HVGs.

    Genes are chosen from categories of prior knowledge (curated lists) and
    of evidence in the data, each with a quota. All genes are put in one
    global order (:attr:`ranking_`) and the first ``n_genes`` are selected,
    so selections are nested as ``n_genes`` grows (what
    :class:`~sktx.progressive.ProgressiveFit` relies on).

    Parameters
    ----------
    n_genes : int, default=500
        Number of genes to select. More than the data has selects all (with a
        warning).
    quotas : dict, optional
        ``{category: n}`` with categories from ``"targets"``, ``"tf"``,
        ``"pluripotency"``, ``"cell_cycle"``, ``"metabolic"``, ``"responsive"``,
        ``"hvg"``. ``n`` is a number of genes at ``n_genes`` (int) or a
        fraction of ``n_genes`` (float in [0, 1]); unlisted categories get
        none and the remainder goes to ``hvg``. ``None`` uses the default
        schedule (see :func:`default_quotas` and Notes). Integer quotas fix
        the composition at this ``n_genes``; to keep selections nested while
        ``n_genes`` changes, pass fractions or keep the default.
    gene_sets : dict, optional
        ``{category: source}`` replacing the built-in lists of ``"tf"``,
        ``"cell_cycle"``, ``"metabolic"``, ``"pluripotency"``. A source is a
        path to a ``.txt`` list or ``.gmt`` file (union of its terms;
        ``"file.gmt::TERM"`` for one term), a list of symbols and/or paths, or
        a dict of term -> genes. See :func:`sktx.genesets.load_gene_sets`.
    hvg_flavor : {"auto", "seurat_v3", "seurat", "cell_ranger"}, default="auto"
        Flavor of :func:`scanpy.pp.highly_variable_genes` used to score
        variability. ``"auto"`` uses ``"seurat_v3"`` on raw counts when the data
        are counts and ``scikit-misc`` is installed, otherwise ``"seurat"`` on
        log1p data.
    include_targets : bool, default=True
        Give the perturbed genes measured in the data (members of combinations
        included) their own quota. ``False`` gives that quota to ``hvg``.
    perturbation_key : str or None, default="target_gene"
        ``obs`` column with perturbation labels (``"A+B"`` for combinations).
        ``None`` for data without perturbations: ``targets`` and
        ``responsive`` are then empty.
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        ``obs`` column with cell types; responses are then measured against
        the controls of the same cell type.
    layer : str, optional
        Read expression from this layer instead of ``X``.
    random_state : int, RandomState or None, default=None
        Accepted for API symmetry; the selection is deterministic (ties are
        broken by ``var`` order) so that fits at different ``n_genes`` agree.

    Attributes
    ----------
    selected_genes_ : ndarray of str, shape (n_selected,)
        Selected genes, in :attr:`ranking_` order.
    categories_ : DataFrame
        One row per selected gene: ``gene``, ``category`` (where it was
        counted; ``"hvg"`` for spilled quota), ``quota`` (whose quota slot it
        filled), ``score`` (evidence within its category) and ``rank``.
    ranking_ : ndarray of str, shape (n_features_in_,)
        Every gene in global order; ``ranking_[:k]`` is the selection at ``k``.
    quotas_ : dict of str to int
        Slots per category at ``n_genes`` (before spill).
    gene_sets_ : dict of str to tuple of str
        Curated genes per category found in the data (aliases resolved).
    hvg_flavor_ : str
        Variability score actually used (``"variance"`` when scanpy failed).
    feature_names_in_ : ndarray of str
        Genes seen in ``fit``.
    n_features_in_ : int
        Number of genes seen in ``fit``.

    See Also
    --------
    sktx.genesets.load_gene_sets : Reading your own gene lists.
    default_quotas : The default quotas at any size.

    Notes
    -----
    Within a category genes are ranked by evidence in the (log1p) data:

    - ``targets``: strongest mean change of the target itself in its
      perturbations (knock-down efficiency);
    - ``responsive``: mean absolute pseudobulk change vs control over all
      perturbations (per cell type when ``cell_type_key`` is given);
    - ``hvg``: normalised dispersion from scanpy;
    - curated categories: mean of the gene's percentile in variability and
      in response.

    Only genes present in the data count, and a gene is counted once (in the
    first category that claims it). Quota a category cannot fill spills to
    ``hvg``. The order of :attr:`ranking_` follows a schedule: the first ~100
    genes are targets, TFs and pluripotency genes, the next 100 add cell
    cycle, metabolism and the first responsive genes, then responsive genes
    and HVGs; every further block of 500 repeats the composition at 500.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.selection import GeneSelector
    >>> adata = make_perturbseq(400, 300, 6, gene_names="symbols", random_state=0)
    >>> sel = GeneSelector(n_genes=50).fit(adata)
    >>> sel.transform(adata).shape
    (400, 50)
    >>> set(GeneSelector(n_genes=20).fit(adata).selected_genes_) <= set(sel.selected_genes_)
    True
    """

    def __init__(
        self,
        *,
        n_genes: int = 500,
        quotas: Mapping[str, int | float] | None = None,
        gene_sets: Mapping[str, object] | None = None,
        hvg_flavor: str = "auto",
        include_targets: bool = True,
        perturbation_key: str | None = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        layer: str | None = None,
        random_state=None,
    ):
        self.n_genes = n_genes
        self.quotas = quotas
        self.gene_sets = gene_sets
        self.hvg_flavor = hvg_flavor
        self.include_targets = include_targets
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.layer = layer
        self.random_state = random_state

    def fit(self, adata, y=None):
        """Rank all genes and select the first ``n_genes``.

        Parameters
        ----------
        adata : AnnData
            Cells x genes, raw counts or log1p (detected). Not modified. May be
            backed (``backed="r"``): statistics are then summed over row chunks.
        y : None
            Ignored.

        Returns
        -------
        self : GeneSelector
        """
        n_genes = _check_n_genes(self.n_genes)
        shares = None if self.quotas is None else _shares_from_quotas(self.quotas, n_genes)
        if self.hvg_flavor not in _HVG_FLAVORS:
            raise ValueError(
                f"`hvg_flavor` must be one of {_HVG_FLAVORS}, got {self.hvg_flavor!r}."
            )
        gene_sets = load_gene_sets(self.gene_sets)
        check_random_state(self.random_state)
        info = validate_adata(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            layer=self.layer,
        )
        n_vars = adata.n_vars
        if n_genes > n_vars:
            warnings.warn(
                f"`n_genes={n_genes}` exceeds the {n_vars} genes in the data; selecting all "
                f"{n_vars}.",
                UserWarning,
                stacklevel=2,
            )
        var_names = pd.Index(adata.var_names.astype(str))
        if is_backed(adata):
            # out-of-core: statistics over row chunks, the matrix is never loaded whole
            reader = backed_rows(adata, layer=self.layer, float32=False)
            hvg_score, self.hvg_flavor_ = self._backed_hvg_scores(reader, adata)
            response, target_score = self._responses(adata, info, var_names, matrix=reader)
        else:
            data, has_counts = self._log_data(adata)
            hvg_score, self.hvg_flavor_ = self._hvg_scores(data, has_counts)
            response, target_score = self._responses(data, info, var_names)

        evidence = _percentile(hvg_score)
        if response is not None:
            evidence = 0.5 * (evidence + _percentile(response))
        queues: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {"hvg": hvg_score}
        self.gene_sets_ = {}
        for cat in CATEGORIES:
            resolved = resolve_aliases(gene_sets.get(cat, ()), var_names)
            idx = np.unique(var_names.get_indexer(resolved))
            idx = idx[idx >= 0]
            queues[cat] = _order(evidence, idx)
            scores[cat] = evidence
            self.gene_sets_[cat] = tuple(var_names[np.sort(idx)])
        if target_score is not None:
            idx = np.flatnonzero(np.isfinite(target_score))
            queues["targets"] = _order(target_score, idx)
            scores["targets"] = target_score
        if response is not None:
            idx = np.flatnonzero(np.nan_to_num(response) > 0)
            queues["responsive"] = _order(response, idx)
            scores["responsive"] = response
        queues["hvg"] = _order(hvg_score)

        slots = self._slots(shares, n_vars)
        k = min(n_genes, n_vars)
        self.quotas_ = _slot_counts(self._slots(shares, n_genes), n_genes)
        order, cat_of, quota_of = self._fill(slots, queues, n_vars)
        table = pd.DataFrame(
            {
                "gene": var_names[order].to_numpy(dtype=object),
                "category": cat_of,
                "quota": quota_of,
                "score": [float(scores[c][g]) for c, g in zip(cat_of, order, strict=True)],
                "rank": np.arange(n_vars),
            }
        )
        self.ranking_ = table["gene"].to_numpy(dtype=object)
        self.selected_genes_ = self.ranking_[:k].copy()
        self.categories_ = table.iloc[:k].reset_index(drop=True)
        self.feature_names_in_ = var_names.to_numpy(dtype=object)
        self.n_features_in_ = n_vars
        return self

    def _slots(self, shares, n: int) -> list[int]:
        slots = _default_slots(n) if shares is None else _share_slots(shares, n)
        if not self.include_targets:
            # Same schedule (so the order of the other categories is unchanged).
            hvg, targets = QUOTA_KEYS.index("hvg"), QUOTA_KEYS.index("targets")
            slots = [hvg if p == targets else p for p in slots]
        return slots

    def _log_data(self, adata):
        """A private AnnData with log1p values in ``X`` (counts in a layer if known)."""
        import anndata as ad

        keys = [k for k in (self.perturbation_key, self.cell_type_key) if k is not None]
        obs = pd.DataFrame({k: adata.obs[k].astype(str).to_numpy() for k in keys})
        obs.index = adata.obs_names.astype(str)
        uns = {"log1p": dict(adata.uns["log1p"])} if "log1p" in adata.uns else {}
        light = ad.AnnData(
            X=get_matrix(adata, self.layer),
            obs=obs,
            var=pd.DataFrame(index=adata.var_names.astype(str)),
            uns=uns,
        )
        if is_log_normalized(adata, layer=self.layer):
            return light, False
        return log_normalize(light), True

    def _hvg_scores(self, data, has_counts: bool) -> tuple[np.ndarray, str]:
        import scanpy as sc

        flavor = self.hvg_flavor
        if flavor == "auto":
            flavor = "seurat_v3" if has_counts and _has_skmisc() else "seurat"
        if flavor == "seurat_v3" and not has_counts:
            raise ValueError(
                "`hvg_flavor='seurat_v3'` needs raw counts but the data look log-normalised; "
                "use `hvg_flavor='seurat'` (or 'auto'), or pass counts (e.g. `layer='counts'`)."
            )
        if flavor == "seurat_v3" and not _has_skmisc():
            raise ImportError(
                "`hvg_flavor='seurat_v3'` needs scikit-misc (`pip install scikit-misc`); or use "
                "`hvg_flavor='auto'`, which falls back to 'seurat'."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if flavor == "seurat_v3":
                    df = sc.pp.highly_variable_genes(
                        data,
                        flavor="seurat_v3",
                        layer="counts",
                        n_top_genes=min(_V3_TOP, data.n_vars),
                        inplace=False,
                    )
                    score = df["variances_norm"]
                elif flavor == "seurat":
                    # scanpy's steps on moments summed over row chunks, the computation
                    # used for backed data too, so both select the same genes
                    score = _seurat_scores(data.X, data.uns.get("log1p", {}).get("base"))
                else:
                    df = sc.pp.highly_variable_genes(data, flavor=flavor, inplace=False)
                    score = df["dispersions_norm"]
            return np.asarray(score, dtype=np.float64), flavor
        except Exception as err:  # scanpy's binning / loess fail on tiny or degenerate data
            warnings.warn(
                f"highly-variable-gene scoring (`flavor={flavor!r}`) failed ({err}); ranking "
                "variability by the variance of log1p expression instead.",
                UserWarning,
                stacklevel=3,
            )
            return _log_variance(data.X), "variance"

    def _backed_hvg_scores(self, reader, adata) -> tuple[np.ndarray, str]:
        """Seurat dispersions from moments accumulated over row chunks of a backed file."""
        if self.hvg_flavor not in ("auto", "seurat"):
            raise ValueError(
                f"`hvg_flavor={self.hvg_flavor!r}` is not available for a backed AnnData: "
                "out of core, sktx computes the 'seurat' dispersions over row chunks. Use "
                "`hvg_flavor='seurat'` (or 'auto'), or load the data (`adata.to_memory()`)."
            )
        base = None if reader.normalize else adata.uns.get("log1p", {}).get("base")
        try:
            return _seurat_scores(reader, base), "seurat"
        except ValueError as err:  # binning fails on tiny or degenerate data
            warnings.warn(
                f"seurat dispersions failed ({err}); ranking variability by the variance of "
                "log1p expression instead.",
                UserWarning,
                stacklevel=3,
            )
            return column_moments(reader)["var"], "variance"

    def _responses(self, data, info, var_names: pd.Index, matrix=None):
        """Mean |pseudobulk delta| per gene and the strongest self-change per target."""
        if info is None or not info.perturbations:
            return None, None
        pb = pseudobulk(
            data, self.perturbation_key, cell_type_key=self.cell_type_key, matrix=matrix
        )
        deltas, groups = pb.deltas(self.control_label)
        absd = np.abs(deltas)
        response = absd.mean(axis=0)
        target_score = np.full(len(var_names), np.nan)
        for row, label in enumerate(groups["perturbation"]):
            targets = resolve_aliases(split_targets(label, self.control_label), var_names)
            idx = var_names.get_indexer(targets)
            for g in idx[idx >= 0]:
                target_score[g] = np.fmax(target_score[g], absd[row, g])
        return response, target_score

    @staticmethod
    def _fill(slots: list[int], queues: dict[str, np.ndarray], n_vars: int):
        """Walk the slot schedule, taking each category's next unused gene."""
        taken = np.zeros(n_vars, dtype=bool)
        pointer = dict.fromkeys(QUOTA_KEYS, 0)
        order, cat_of, quota_of = [], [], []

        def next_free(cat: str):
            queue = queues.get(cat, ())
            i = pointer[cat]
            while i < len(queue) and taken[queue[i]]:
                i += 1
            pointer[cat] = i
            return queue[i] if i < len(queue) else None

        # Slots beyond the schedule (none with the default one) go to `hvg`.
        for p in [*slots, *[len(QUOTA_KEYS) - 1] * (n_vars - len(slots))][:n_vars]:
            quota = QUOTA_KEYS[p]
            gene, cat = next_free(quota), quota
            if gene is None:
                gene, cat = next_free("hvg"), "hvg"
            taken[gene] = True
            order.append(int(gene))
            cat_of.append(cat)
            quota_of.append(quota)
        return np.asarray(order), cat_of, quota_of

    def transform(self, adata):
        """Return a new AnnData holding only the selected genes, in selection order.

        Parameters
        ----------
        adata : AnnData
            Must contain every gene of :attr:`selected_genes_`. Not modified.

        Returns
        -------
        AnnData
            ``adata[:, selected_genes_].copy()``; for a backed ``adata`` the
            view ``adata[:, selected_genes_]`` (nothing is read from disk;
            :class:`~sktx.PerturbationRegressor` streams its rows). Raw counts are first
            library-size normalised and log1p-transformed over *all* genes
            (:func:`sktx.log_normalize`, counts kept in ``layers['counts']``),
            so the values of a gene do not depend on which panel was selected.
        """
        check_is_fitted(self, "selected_genes_")
        validate_adata(adata, perturbation_key=None, check_values=False)
        genes = check_genes(adata, self.selected_genes_, what="selected genes")
        if is_backed(adata):
            # A view reads nothing; sktx's reader normalises raw counts by the total over
            # all genes stored in the file, as the in-memory branch below does.
            return adata[:, genes]
        if self.layer is None and not is_log_normalized(adata):
            # normalising after subsetting would rescale every cell by the panel's total
            return log_normalize(adata)[:, genes].copy()
        return adata[:, genes].copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR `X` is read as is
        tags.input_tags.positive_only = True  # counts or log1p; negatives are rejected
        return tags

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Selected gene names (``input_features`` is ignored).

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self, "selected_genes_")
        return np.asarray(self.selected_genes_, dtype=object)
