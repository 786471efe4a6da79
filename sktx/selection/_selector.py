"""GeneSelector: choose the genes a model sees, by prior knowledge and data evidence."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from sktx._params import Integer, Options, check_params
from sktx.data import (
    PerturbationData,
    check_genes,
    column_moments,
    get_matrix,
    is_backed,
    is_log_normalized,
    log_normalize,
    prepare,
    pseudobulk,
    split_targets,
    validate_adata,
)
from sktx.genesets import CATEGORIES, load_gene_sets, resolve_aliases

__all__ = ["GeneSelector"]

from sktx.selection._quotas import (
    _HVG_FLAVORS,
    _V3_TOP,
    QUOTA_KEYS,
    _default_slots,
    _share_slots,
    _shares_from_quotas,
    _slot_counts,
)
from sktx.selection._scores import (
    _has_skmisc,
    _log_variance,
    _order,
    _percentile,
    _same_params,
    _seurat_scores,
)


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

    _constraints: ClassVar[dict] = {
        "n_genes": Integer(low=1),
        "hvg_flavor": Options(*_HVG_FLAVORS),
    }

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
        check_params(self)
        n_genes = int(self.n_genes)
        shares = None if self.quotas is None else _shares_from_quotas(self.quotas, n_genes)
        check_random_state(self.random_state)
        data = self._prepare(adata, require_control=True)
        n_vars = data.n_vars
        if n_genes > n_vars:
            warnings.warn(
                f"`n_genes={n_genes}` exceeds the {n_vars} genes in the data; selecting all "
                f"{n_vars}.",
                UserWarning,
                stacklevel=2,
            )
        ranked = self._ranked(data, shares)
        self.hvg_flavor_, self.gene_sets_ = ranked["hvg_flavor"], dict(ranked["gene_sets"])
        table, var_names = ranked["table"], data.genes
        k = min(n_genes, n_vars)
        self.quotas_ = _slot_counts(self._slots(shares, n_genes), n_genes)
        self.ranking_ = table["gene"].to_numpy(dtype=object)
        self.selected_genes_ = self.ranking_[:k].copy()
        self.categories_ = table.iloc[:k].reset_index(drop=True)
        self.feature_names_in_ = var_names.to_numpy(dtype=object)
        self.n_features_in_ = n_vars
        return self

    def _ranked(self, data, shares) -> dict:
        """The full ranking of ``data``'s genes; ``n_genes`` only cuts it (nested by design).

        Kept for the last prepared object, so fitting the same data again with only
        ``n_genes`` changed (every :class:`~sktx.ProgressiveFit` phase) ranks once.
        """
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "n_genes"}
        memo = getattr(self, "_ranking_memo", None)
        if memo is not None and memo[0]() is data and _same_params(memo[1], params):
            return memo[2]
        gene_sets = load_gene_sets(self.gene_sets)
        var_names = data.genes
        n_vars = data.n_vars
        if data.backed:
            # out-of-core: statistics over row chunks, the matrix is never loaded whole
            hvg_score, flavor = self._backed_hvg_scores(data.X, data)
        else:
            hvg_score, flavor = self._hvg_scores(
                self._log_data(data), data.counts is not None and data.normalization == "counts"
            )
        response, target_score = self._responses(data, var_names)

        evidence = _percentile(hvg_score)
        if response is not None:
            evidence = 0.5 * (evidence + _percentile(response))
        queues: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {"hvg": hvg_score}
        found = {}
        for cat in CATEGORIES:
            resolved = resolve_aliases(gene_sets.get(cat, ()), var_names)
            idx = np.unique(var_names.get_indexer(resolved))
            idx = idx[idx >= 0]
            queues[cat] = _order(evidence, idx)
            scores[cat] = evidence
            found[cat] = tuple(var_names[np.sort(idx)])
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
        ranked = {"table": table, "hvg_flavor": flavor, "gene_sets": found}
        self._ranking_memo = (weakref.ref(data), params, ranked)
        return ranked

    def _slots(self, shares, n: int) -> list[int]:
        slots = _default_slots(n) if shares is None else _share_slots(shares, n)
        if not self.include_targets:
            # Same schedule (so the order of the other categories is unchanged).
            hvg, targets = QUOTA_KEYS.index("hvg"), QUOTA_KEYS.index("targets")
            slots = [hvg if p == targets else p for p in slots]
        return slots

    def _log_data(self, data):
        """A light AnnData for scanpy: log1p ``X``, ``layers['counts']`` when counts exist."""
        import anndata as ad

        light = ad.AnnData(
            X=data.X, var=pd.DataFrame(index=data.genes), uns={"log1p": {"base": data.log_base}}
        )
        if data.counts is not None:
            light.layers["counts"] = data.counts
        return light

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
                stacklevel=4,  # _hvg_scores <- _ranked <- fit <- caller
            )
            return _log_variance(data.X), "variance"

    def _backed_hvg_scores(self, reader, data) -> tuple[np.ndarray, str]:
        """Seurat dispersions from moments accumulated over row chunks of a backed file."""
        if self.hvg_flavor not in ("auto", "seurat"):
            raise ValueError(
                f"`hvg_flavor={self.hvg_flavor!r}` is not available for a backed AnnData: "
                "out of core, sktx computes the 'seurat' dispersions over row chunks. Use "
                "`hvg_flavor='seurat'` (or 'auto'), or load the data (`adata.to_memory()`)."
            )
        base = data.log_base
        try:
            return _seurat_scores(reader, base), "seurat"
        except ValueError as err:  # binning fails on tiny or degenerate data
            warnings.warn(
                f"seurat dispersions failed ({err}); ranking variability by the variance of "
                "log1p expression instead.",
                UserWarning,
                stacklevel=4,  # _hvg_scores <- _ranked <- fit <- caller
            )
            return column_moments(reader)["var"], "variance"

    def _responses(self, data, var_names: pd.Index):
        """Mean |pseudobulk delta| per gene and the strongest self-change per target."""
        if not data.perturbations:
            return None, None
        deltas, groups = pseudobulk(data).deltas(data.control_label)
        absd = np.abs(deltas)
        response = absd.mean(axis=0)
        target_score = np.full(len(var_names), np.nan)
        for row, label in enumerate(groups["perturbation"]):
            targets = resolve_aliases(split_targets(label, data.control_label), var_names)
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
        if isinstance(adata, PerturbationData):
            return adata.select_genes(self.selected_genes_, what="selected genes")
        validate_adata(adata, perturbation_key=None, check_values=False)
        genes = check_genes(adata, self.selected_genes_, what="selected genes")
        if is_backed(adata):
            # A view reads nothing; sktx's reader normalises raw counts by the total over
            # all genes stored in the file, as the in-memory branch below does.
            return adata[:, genes]
        if self.perturbation_key not in adata.obs.columns:  # genes only, no labels to check
            data = None
            counts = self.layer is None and not is_log_normalized(adata)
        else:
            data = self._prepare(adata, require_control=False)
            counts = data.normalization == "counts"
        out = adata[:, genes].copy()
        if counts:
            # normalising after subsetting would rescale every cell by the panel's total
            cols = pd.Index(adata.var_names).get_indexer(genes)
            raw = get_matrix(adata, self.layer) if data is None else data.counts
            X = log_normalize(adata).X if data is None else data.X
            out.X = X[:, cols]
            out.layers["counts"] = raw[:, cols].copy()
            out.uns["log1p"] = {"base": None}
        return out

    def _prepare(self, adata, *, require_control: bool):
        """The one entry of data (an AnnData is checked and normalised once per call)."""
        return prepare(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            layer=self.layer,
            require_control=require_control,
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_ranking_memo", None)  # refers to one prepared object; not data
        return state

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
