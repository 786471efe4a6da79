"""The 2026 Virtual Cell Challenge score: delegate to ``cell-eval2`` (preset ``vcc2026``).

``cell-eval2`` (``pip install 'sktx[eval]'``, with ``pdex`` for CPU differential
expression) computes the six scored metrics, the mean-response baseline ``b``
(:func:`cell_eval2.build_generic_baseline`), the split-half replicate ``r``
(five seeded splits, :func:`cell_eval2.anchor.compute_replicate_anchor`) and the
scaled values ``(u - b) / (r - b)`` with the competition's clamps
(:func:`cell_eval2.score_metrics` with the anchor) — the same calls ``cell-eval2
baseline``, ``cell-eval2 run --anchor`` and ``cell-eval2 score --anchor`` make.
sktx adds only the plumbing: counts in, contexts scored separately, one object out.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sktx.data import BackedRows, DataContractError, PerturbationData, prepare

__all__ = ["VCC2026_METRICS", "VCC2026Result", "VCC2026Scorer", "vcc2026_evaluate"]

#: The six scored members of the ``vcc2026`` preset, by their cell-eval2 names.
VCC2026_METRICS = (
    "pds_cosine",
    "expr_mse_unbiased_capped_norm",
    "de_wilcoxon_direction_fidelity_yield_raw",
    "de_wilcoxon_direction_reach_raw",
    "de_wilcoxon_sig_jaccard",
    "de_wilcoxon_lfc_nmae",
)
_INSTALL = (
    "the 2026 score is computed by the `cell-eval2` package, which is not installed; "
    "install it with `pip install 'sktx[eval]'` (cell-eval2 and pdex)."
)
# baseline + replicate anchor per (real data, config): they read the real side only
_REFERENCE_CACHE: dict[tuple, tuple] = {}
_CACHE_SIZE = 4


def _cell_eval2():
    try:
        import cell_eval2
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return cell_eval2


@dataclass(frozen=True)
class VCC2026Result:
    """What :func:`vcc2026_evaluate` returns (means over contexts, equal weight).

    Attributes
    ----------
    metrics : Series
        The six raw metric values (cell-eval2's ``mean`` aggregate), by cell-eval2 name.
    baseline : Series
        ``b``: the same metrics of cell-eval2's mean-response baseline.
    replicate : Series
        ``r``: the split-half replicate anchor (mean of five seeded splits).
    scaled : Series
        ``(u - b) / (r - b)`` with cell-eval2's clamps: 0 is the baseline, 1 a replicate.
    score : float
        Mean of ``scaled`` over the six metrics, averaged over contexts.
    per_context : DataFrame
        One row per (context, metric): ``value``, ``baseline``, ``replicate``,
        ``scaled``; the row ``metric == "score"`` holds each context's score.
    engine : str
        The differential-expression engine cell-eval2 ran (e.g. ``"pdex"``).
    """

    metrics: pd.Series
    baseline: pd.Series
    replicate: pd.Series
    scaled: pd.Series
    score: float
    per_context: pd.DataFrame
    engine: str

    def summary(self) -> str:
        """ "How far from the baseline toward the replicate", in words."""
        return describe_score(self.score)


def describe_score(score: float) -> str:
    """The scaled score in words (0 = mean-response baseline, 1 = replicate).

    Examples
    --------
    >>> describe_score(0.25)
    '25% of the way from the mean-response baseline (0) toward a replicate of the experiment (1)'
    """
    if not math.isfinite(score):
        return "no score"
    if score < 0:
        return (
            f"below the mean-response baseline: {abs(score):.0%} of the baseline-to-replicate "
            "distance on the wrong side of the baseline"
        )
    if score > 1:
        return f"beyond a replicate of the experiment ({score:.0%} of the way)"
    return (
        f"{score:.0%} of the way from the mean-response baseline (0) toward a replicate "
        "of the experiment (1)"
    )


def vcc2026_config(perturbation_key: str, control_label: str, de_backend: str = "pdex", **options):
    """cell-eval2's ``vcc2026`` preset with sktx's keys, the DE engine and overrides."""
    ce = _cell_eval2()
    cfg = ce.EvalConfig.from_preset("vcc2026")
    cfg = replace(
        cfg,
        pert_col=perturbation_key,
        control=control_label,
        device="cpu",
        de=replace(cfg.de, backend=de_backend),
    )
    return replace(cfg, **options) if options else cfg


def _counts_adata(data, keys: list[str], columns: dict[str, np.ndarray], prefix: str = "c"):
    """A plain AnnData of raw counts with only the obs columns cell-eval2 reads."""
    import anndata as ad

    if data.counts is None:
        raise DataContractError(
            "the 2026 score (cell-eval2 preset `vcc2026`) is computed on raw integer counts, "
            "but this data holds log1p values only. Pass the counts (counts `X` or "
            "`layers['counts']`); predict them with `predict(query, output='counts')`."
        )
    X = data.counts.to_csr() if isinstance(data.counts, BackedRows) else data.counts
    X = sp.csr_matrix(X, dtype=np.float32)
    obs = pd.DataFrame({k: columns[k] for k in keys})
    obs.index = pd.Index([f"{prefix}{i}" for i in range(X.shape[0])])
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=pd.Index(data.genes.astype(str))))


def _as_data(adata, *, perturbation_key, control_label, context_key, what) -> PerturbationData:
    try:
        return prepare(
            adata,
            perturbation_key=perturbation_key,
            control_label=control_label,
            cell_type_key=context_key,
            normalize="auto",
            require_control=False,
        )
    except DataContractError as exc:
        raise DataContractError(f"{what}: {exc}") from None


def _reference(real_ad, cfg):
    """Baseline aggregate and replicate anchor of one context's real data (cached)."""
    ce = _cell_eval2()
    from cell_eval2.anchor import _derive_seeds, build_meta, compute_replicate_anchor
    from cell_eval2.cache import config_hash, fingerprint_adata
    from cell_eval2.catalog import resolve_metrics
    from cell_eval2.run import metric_output_names

    key = (
        fingerprint_adata(real_ad, pert_col=cfg.pert_col, strict=True),
        config_hash(cfg.to_dict()),
    )
    if key in _REFERENCE_CACHE:
        return _REFERENCE_CACHE[key]
    base = ce.build_generic_baseline(real_ad, config=cfg)
    splits, anchor = compute_replicate_anchor(real_ad, config=cfg, base_seed=0, n_splits=5)
    names, _ = resolve_metrics(cfg.metrics, version=cfg.version)
    meta = build_meta(
        real_ad=real_ad,
        cfg=cfg,
        names=list(names),
        base_seed=0,
        n_splits=5,
        seeds=_derive_seeds(0, 5),
        metrics=metric_output_names(cfg),
    )
    if len(_REFERENCE_CACHE) >= _CACHE_SIZE:
        _REFERENCE_CACHE.pop(next(iter(_REFERENCE_CACHE)))
    _REFERENCE_CACHE[key] = (base.agg, (anchor, splits, meta))
    return _REFERENCE_CACHE[key]


def _score_context(real_ad, pred_ad, cfg) -> tuple[pd.DataFrame, str]:
    """cell-eval2 on one context: per-metric value, baseline, replicate, scaled."""
    ce = _cell_eval2()
    from cell_eval2.baseline import build_run_meta
    from cell_eval2.run import aggregate_metrics_wide, metric_output_names
    from cell_eval2.score import expect_from_run_meta

    base_agg, anchor = _reference(real_ad, cfg)
    tidy = ce.compute_metrics(pred_ad, real_ad, config=cfg)
    user = aggregate_metrics_wide(tidy, metrics=metric_output_names(cfg))
    run_meta = build_run_meta(cfg, real_ad, pred_ad)
    scored = ce.score_metrics(
        user, base_agg, anchor=anchor, anchor_expect=expect_from_run_meta(run_meta)
    ).to_pandas()
    scaled = dict(zip(scored["metric"], scored["from_replicate"], strict=True))
    mean_row = lambda frame: frame.to_pandas().set_index("statistic").loc["mean"]  # noqa: E731
    u, b = mean_row(user), mean_row(base_agg)
    r = anchor[0].to_pandas().set_index("metric")["replicate"]
    rows = [
        {
            "metric": m,
            "value": float(u[m]),
            "baseline": float(b[m]),
            "replicate": float(r[m]),
            "scaled": float(scaled[m]),
        }
        for m in VCC2026_METRICS
    ]
    rows.append(
        {
            "metric": "score",
            "value": np.nan,
            "baseline": 0.0,
            "replicate": 1.0,
            "scaled": float(scaled["avg_score"]),
        }
    )
    return pd.DataFrame(rows), str(run_meta.get("resolved_de_backend"))


def vcc2026_evaluate(
    real,
    pred,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    context_key: str | None = None,
    de_backend: str = "pdex",
    **cell_eval2_options,
) -> VCC2026Result:
    """Score raw-count predictions by the 2026 Virtual Cell Challenge rules (cell-eval2).

    Per context (``obs[context_key]``; one context without it): cell-eval2's
    ``vcc2026`` preset with ``pert_col=perturbation_key``, ``control=control_label``,
    ``device="cpu"`` and ``de.backend=de_backend`` computes the six metrics of the
    prediction, of its mean-response baseline ``b`` and of a split-half replicate
    ``r`` of the real cells; each is scaled ``(u - b) / (r - b)`` and the six are
    averaged. Contexts are scored separately and averaged with equal weight. The
    numbers are those of ``cell-eval2 baseline``, ``cell-eval2 run --anchor`` and
    ``cell-eval2 score --anchor`` with the same options.

    Parameters
    ----------
    real : AnnData or PerturbationData
        Real cells with raw counts: control cells and the perturbed cells.
    pred : AnnData or PerturbationData
        Predicted raw integer counts on the real data's genes (reordered to the
        real gene order when the sets match), one label per cell. Without control
        cells, the real control cells of each context are appended (as the
        challenge platform does).
    perturbation_key, control_label : str
        ``obs`` column of the labels and the control label (both sides).
    context_key : str, optional
        ``obs`` column of the context (cell line); each is scored on its own.
    de_backend : str, default="pdex"
        cell-eval2's DE engine (``"pdex"``: CPU; ``"auto"``, ``"scanpy"``, ...).
        DE numbers differ between engines; :attr:`VCC2026Result.engine` says which ran.
    **cell_eval2_options
        Other :class:`cell_eval2.EvalConfig` fields (e.g. ``target_gene_map=``,
        ``num_threads=``), passed through.

    Returns
    -------
    VCC2026Result

    Raises
    ------
    ImportError
        cell-eval2 is not installed (``pip install 'sktx[eval]'``).
    DataContractError
        Either side without raw counts, other genes, or missing perturbations.

    Examples
    --------
    >>> import anndata as ad  # doctest: +SKIP
    >>> real = ad.read_h5ad("../shared/data/vcc2025_h1_subset.h5ad")  # doctest: +SKIP
    >>> res = vcc2026_evaluate(real, pred)  # doctest: +SKIP
    >>> res.score, res.engine  # doctest: +SKIP
    """
    cfg = vcc2026_config(perturbation_key, control_label, de_backend, **cell_eval2_options)
    keys = {"perturbation_key": perturbation_key, "control_label": control_label}
    real_d = _as_data(real, **keys, context_key=context_key, what="real")
    pred_d = _as_data(pred, **keys, context_key=context_key, what="pred")
    pred_d = _align_genes(pred_d, real_d)
    frames, engines = [], set()
    for ct in sorted(set(real_d.contexts.tolist())):
        r = real_d[np.flatnonzero(real_d.contexts == ct)]
        p = pred_d[np.flatnonzero(pred_d.contexts == ct)]
        real_ad, pred_ad = _context_pair(r, p, perturbation_key, control_label, ct)
        try:
            frame, engine = _score_context(real_ad, pred_ad, cfg)
        except ValueError as exc:
            if cfg.target_gene_map is not None or "resolves to a gene" not in str(exc):
                raise
            frame, engine = _score_context(real_ad, pred_ad, _unmeasured_targets(cfg, r, ct))
        frame.insert(0, "context", ct)
        frames.append(frame)
        engines.add(engine)
    per_context = pd.concat(frames, ignore_index=True)
    mean = per_context.groupby("metric", sort=False)[["value", "baseline", "replicate", "scaled"]]
    mean = mean.mean().loc[list(VCC2026_METRICS)]
    score = float(per_context.loc[per_context["metric"] == "score", "scaled"].mean())
    return VCC2026Result(
        metrics=mean["value"].rename("value"),
        baseline=mean["baseline"].rename("baseline"),
        replicate=mean["replicate"].rename("replicate"),
        scaled=mean["scaled"].rename("scaled"),
        score=score,
        per_context=per_context,
        engine=", ".join(sorted(engines)),
    )


def _unmeasured_targets(cfg, real: PerturbationData, context):
    """The config for a panel where cell-eval2 finds no target among its genes.

    cell-eval2 reads that as construct IDs and refuses. When the targets simply are not
    measured (a gene subset, or genes its 5-CPM filter drops) there is nothing to exclude:
    each label maps to its gene when measured, else to None (no exclusion), with a warning.
    """
    measured = set(real.genes)
    labels = real.perturbations
    mapping = {lab: (lab if lab in measured else None) for lab in labels}
    where = "" if context == "all" else f" in context {context!r}"
    warnings.warn(
        f"cell-eval2 found none of the {len(labels)} perturbations' target genes{where} "
        "among the genes it scores (they are not measured, or below its 5-CPM filter), so "
        "no target gene can be excluded; scored with `target_gene_map` = {label: gene, or "
        "None when not measured}. Pass `target_gene_map=` to decide otherwise.",
        UserWarning,
        stacklevel=3,
    )
    return replace(cfg, target_gene_map=mapping)


def _align_genes(pred: PerturbationData, real: PerturbationData) -> PerturbationData:
    if list(pred.genes) == list(real.genes):
        return pred
    missing = real.genes.difference(pred.genes)
    extra = pred.genes.difference(real.genes)
    if len(missing) or len(extra):
        raise DataContractError(
            f"pred must hold exactly the real data's {real.n_vars} genes: {len(missing)} "
            f"missing (e.g. {list(missing[:5])}), {len(extra)} extra (e.g. {list(extra[:5])}). "
            "Predict with `all_genes=True` on a query with the real gene axis."
        )
    return pred.select_genes(list(real.genes))


def _context_pair(real, pred, pkey, control, context):
    """The (real, pred) AnnData pair of one context; real controls appended to pred."""
    import anndata as ad

    where = "" if context == "all" else f" of context {context!r}"
    missing = sorted(set(real.perturbations) - set(pred.perturbations))
    extra = sorted(set(pred.perturbations) - set(real.perturbations))
    if missing or extra:
        raise DataContractError(
            f"pred and real must hold the same perturbations{where}: pred lacks {missing[:10]}"
            f", pred has extra {extra[:10]}."
        )
    real_ad = _counts_adata(real, [pkey], {pkey: real.labels})
    pred_ad = _counts_adata(pred, [pkey], {pkey: pred.labels}, prefix="p")
    if not pred.is_control.any():  # the platform appends the real control cells
        ctrl = real_ad[real.is_control]
        pred_ad = ad.concat([pred_ad, ctrl], index_unique=None)
        pred_ad.obs_names = pd.Index([f"p{i}" for i in range(pred_ad.n_obs)])
    return real_ad, pred_ad


class VCC2026Scorer:
    """``scorer(estimator, adata)``: the 2026 score of held-out perturbations.

    As :class:`~sktx.metrics.PerturbationScorer`: the test split's control cells are
    relabelled with each held-out perturbation
    (:func:`~sktx.model_selection.make_query`), the estimator predicts them, the
    prediction becomes raw counts (``output="counts"`` through
    :func:`sktx._counts.predict_output`, also behind a ``GeneSelector``), and
    :func:`vcc2026_evaluate` scores it against the real cells of the test split on
    all their genes (``all_genes=True``: genes outside a model's panel are the query
    cells' own counts, so models with different panels are scored alike). Higher is
    better (0 = mean-response baseline, 1 = replicate).

    Parameters
    ----------
    perturbation_key, control_label, cell_type_key : str, optional
        Default: read from the estimator, else ``"target_gene"``,
        ``"non-targeting"``, None. The cell type is the scored context.
    random_state : int, default=0
        Which controls make the query, and the sampled counts.
    de_backend : str, default="pdex"
    **cell_eval2_options
        Passed to :func:`vcc2026_evaluate`.

    Examples
    --------
    >>> from sktx.metrics import get_scorer
    >>> get_scorer("vcc2026")
    VCC2026Scorer()
    """

    def __init__(
        self,
        *,
        perturbation_key: str | None = None,
        control_label: str | None = None,
        cell_type_key: str | None = None,
        random_state: int = 0,
        de_backend: str = "pdex",
        **cell_eval2_options,
    ) -> None:
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.random_state = random_state
        self.de_backend = de_backend
        self.cell_eval2_options = cell_eval2_options

    def __repr__(self) -> str:
        return "VCC2026Scorer()"

    def evaluate(self, estimator, X) -> VCC2026Result:
        """The full :class:`VCC2026Result` of ``estimator`` on ``X``."""
        from sktx._counts import predict_output
        from sktx.metrics._scorers import _from_estimator
        from sktx.model_selection import make_query

        _cell_eval2()  # fail before predicting when cell-eval2 is missing
        keys = {
            k: getattr(self, k) if getattr(self, k) is not None else _from_estimator(estimator, k)
            for k in ("perturbation_key", "control_label", "cell_type_key")
        }
        data = prepare(X, **keys)
        query = make_query(data, random_state=self.random_state)
        pred = predict_output(
            estimator, query, output="counts", all_genes=True, random_state=self.random_state
        )
        real = data
        pred.obs[keys["perturbation_key"]] = query.labels
        if keys["cell_type_key"]:
            pred.obs[keys["cell_type_key"]] = query.cell_types
        return vcc2026_evaluate(
            real,
            pred,
            perturbation_key=keys["perturbation_key"],
            control_label=keys["control_label"],
            context_key=keys["cell_type_key"],
            de_backend=self.de_backend,
            **self.cell_eval2_options,
        )

    def __call__(self, estimator, X, y=None) -> float:
        return self.evaluate(estimator, X).score
