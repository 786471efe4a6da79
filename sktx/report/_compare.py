"""The model against its baselines: the best baseline by VCC score, ties, intervals.

What a report says about the trained model rests on three rules:

* the **best baseline** is the one with the highest VCC score (the overall score),
  and several baselines within ``1e-9`` of it are reported together as tied;
* each metric of the model is compared with that baseline (with the best of the tied
  ones on that metric); equal values are a tie, never a win;
* where per-perturbation rows are stored, a bootstrap over the held-out
  perturbations (the same resamples for every model, so differences are paired)
  gives a 95% interval of each mean and of the model-minus-baseline difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sktx.report._record import lower_is_better

__all__ = [
    "TIE_TOLERANCE",
    "best_baselines",
    "bootstrap_intervals",
    "compare_to_best",
    "per_perturbation_summary",
]

#: Two scores closer than this are tied.
TIE_TOLERANCE = 1e-9
# The per-perturbation metrics the VCC score scales against the reference baseline.
_VCC_PARTS = ("DES", "PDS", "MAE")


def _key(metrics: pd.DataFrame) -> str:
    return "VCC" if "VCC" in metrics.columns else str(metrics.columns[0])


def best_baselines(metrics: pd.DataFrame, model_name: str | None) -> list[str]:
    """Baselines with the best VCC score (the first column without one); ties all listed.

    Parameters
    ----------
    metrics : DataFrame
        Models (index) x metrics, as :func:`~sktx.report.evaluate_predictions` returns.
    model_name : str or None
        The trained model's row, left out.

    Returns
    -------
    list of str
        In table order; empty when there is no other row with a finite score.

    Examples
    --------
    >>> m = pd.DataFrame({"VCC": [0.3, 0.0, 0.0]}, index=["model", "mean", "control"])
    >>> best_baselines(m, "model")
    ['mean', 'control']
    """
    col = _key(metrics)
    values = pd.to_numeric(metrics[col].drop(index=model_name, errors="ignore"), errors="coerce")
    values = values.dropna()
    if values.empty:
        return []
    target = values.min() if lower_is_better(col) else values.max()
    return [n for n, v in values.items() if abs(v - target) <= TIE_TOLERANCE]


def _vcc(means: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> np.ndarray:
    """The VCC score from per-resample means of DES, PDS, MAE and of the reference."""
    parts = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for col in _VCC_PARTS:
            u, b = means[col], ref[col]
            s = 1.0 - u / b if col == "MAE" else (u - b) / (1.0 - b)
            parts.append(np.clip(np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None))
    return np.mean(parts, axis=0)


def bootstrap_intervals(
    per_perturbation: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    *,
    pairs: list[tuple[str, str]] = (),
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """Bootstrap over held-out perturbations: intervals of each model's mean metrics.

    Every resample draws the perturbations (rows of one model; the same rows for all
    models) with replacement, so intervals of differences are paired.

    Parameters
    ----------
    per_perturbation : DataFrame
        Long table ``model, [cell_type,] perturbation, <metric>...`` (the report's).
    reference : DataFrame, optional
        The same table for the cell-mean reference baseline (``DES``, ``PDS``,
        ``MAE`` columns): adds the VCC score.
    pairs : list of (str, str)
        ``(model, baseline)`` pairs whose difference ``model - baseline`` gets an
        interval too (as model ``"model - baseline"``).
    n_boot : int, default=1000
    level : float, default=0.95
    random_state : int, default=0

    Returns
    -------
    DataFrame
        Columns ``model, metric, mean, low, high``; empty when fewer than 2
        perturbations are scored.

    Examples
    --------
    >>> pp = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 3, "perturbation": list("XYZ") * 2,
    ...                    "MAE": [0.1, 0.2, 0.3, 0.2, 0.3, 0.4]})
    >>> out = bootstrap_intervals(pp, pairs=[("a", "b")])
    >>> out.loc[out["model"] == "a - b", "high"].round(6).tolist()
    [-0.1]
    """
    keys = [c for c in ("cell_type", "perturbation") if c in per_perturbation.columns]
    metric_cols = [
        c
        for c in per_perturbation.columns
        if c not in {"model", *keys, "n_de_real", "n_de_pred"}
        and pd.api.types.is_numeric_dtype(per_perturbation[c])
    ]
    wide = {
        m: g.set_index(keys)[metric_cols].astype(float)
        for m, g in per_perturbation.groupby("model", sort=False)
    }
    if not wide:
        return pd.DataFrame(columns=["model", "metric", "mean", "low", "high"])
    index = next(iter(wide.values())).index
    wide = {m: w.reindex(index) for m, w in wide.items()}
    n = len(index)
    if n < 2:
        return pd.DataFrame(columns=["model", "metric", "mean", "low", "high"])
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, n, size=(n_boot, n))
    ref = None
    if reference is not None and set(_VCC_PARTS) <= set(reference.columns):
        r = reference.set_index(keys).reindex(index)
        ref = {c: np.nanmean(r[c].to_numpy(float)[draws], axis=1) for c in _VCC_PARTS}
        ref_point = {c: np.nanmean(r[c].to_numpy(float)) for c in _VCC_PARTS}
    boot, point = {}, {}
    for m, w in wide.items():
        values = {c: np.nan_to_num(w[c].to_numpy(float)) for c in metric_cols}
        boot[m] = {c: v[draws].mean(axis=1) for c, v in values.items()}
        point[m] = {c: v.mean() for c, v in values.items()}
        if ref is not None and set(_VCC_PARTS) <= set(metric_cols):
            boot[m]["VCC"] = _vcc(boot[m], ref)
            one = {c: np.array([point[m][c]]) for c in _VCC_PARTS}
            point[m]["VCC"] = float(_vcc(one, {c: np.array([ref_point[c]]) for c in _VCC_PARTS})[0])
    for a, b in pairs:
        if a in boot and b in boot:
            name = f"{a} - {b}"
            boot[name] = {c: boot[a][c] - boot[b][c] for c in boot[a] if c in boot[b]}
            point[name] = {c: point[a][c] - point[b][c] for c in boot[name]}
    alpha = (1.0 - level) / 2.0
    rows = [
        (m, c, float(point[m][c]), float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)))
        for m, by_metric in boot.items()
        for c, v in by_metric.items()
    ]
    return pd.DataFrame(rows, columns=["model", "metric", "mean", "low", "high"])


def compare_to_best(
    metrics: pd.DataFrame, model_name: str | None, intervals: pd.DataFrame | None = None
) -> list[str]:
    """Headline lines: the best baseline by VCC score, then the model on each metric.

    Parameters
    ----------
    metrics : DataFrame
        Models x metrics.
    model_name : str or None
        The trained model's row.
    intervals : DataFrame, optional
        :func:`bootstrap_intervals` output holding ``"<model> - <baseline>"`` rows;
        a difference whose interval holds 0 is called level, not a win or a loss.

    Returns
    -------
    list of str
        Empty when there is no model row or no baseline.

    Examples
    --------
    >>> m = pd.DataFrame({"DES": [0.2, 0.0, 0.0], "VCC": [0.1, 0.0, 0.0]},
    ...                  index=["model", "mean", "control"])
    >>> compare_to_best(m, "model")[0]
    'best baselines by VCC score, tied at 0: mean, control'
    """
    if metrics is None or metrics.empty or model_name not in metrics.index or len(metrics) < 2:
        return []
    best = best_baselines(metrics, model_name)
    if not best:
        return []
    col = _key(metrics)
    score = float(pd.to_numeric(metrics.loc[best[0], col], errors="coerce"))
    by = "VCC score" if col == "VCC" else col
    lines = [
        f"best baseline by {by}: {best[0]} ({_num(score)})"
        if len(best) == 1
        else f"best baselines by {by}, tied at {_num(score)}: {', '.join(best)}"
    ]
    for c in metrics.columns:
        ours = pd.to_numeric(pd.Series([metrics.loc[model_name, c]]), errors="coerce").iloc[0]
        theirs = pd.to_numeric(metrics.loc[best, c], errors="coerce").dropna()
        if theirs.empty or not np.isfinite(ours):
            continue
        low = lower_is_better(c)
        name = theirs.idxmin() if low else theirs.idxmax()
        value = float(theirs[name])
        verdict, extra = _verdict(float(ours), value, low, intervals, model_name, name, c)
        lines.append(
            f"{c} {_num(float(ours))} {verdict} the best baseline ({name}: {_num(value)}){extra}"
        )
    return lines


def _verdict(ours, theirs, low, intervals, model, baseline, col) -> tuple[str, str]:
    if abs(ours - theirs) <= TIE_TOLERANCE:
        return "ties with", ""
    better = ours < theirs if low else ours > theirs
    if intervals is not None and not intervals.empty:
        hit = intervals[
            (intervals["model"] == f"{model} - {baseline}") & (intervals["metric"] == col)
        ]
        if len(hit):
            lo, hi = float(hit["low"].iloc[0]), float(hit["high"].iloc[0])
            extra = f"; 95% interval of the difference [{_num(lo)}, {_num(hi)}]"
            if lo <= 0 <= hi:
                return "is level with", extra + " holds 0"
            return ("beats" if better else "does not beat"), extra
    return ("beats" if better else "does not beat"), ""


def _num(value: float) -> str:
    if abs(value) < 1e-12:
        return "0"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"


def per_perturbation_summary(
    per_perturbation: pd.DataFrame, model_name: str, baseline: str | None
) -> pd.DataFrame | None:
    """One row per held-out perturbation: truly DE genes, the model and the baseline.

    Parameters
    ----------
    per_perturbation : DataFrame
        The report's long table (``model``, ``perturbation``, metric columns,
        ``n_de_real`` = genes DE in the real cells at FDR 0.05).
    model_name : str
    baseline : str or None
        A second model shown beside it (the best baseline).

    Returns
    -------
    DataFrame or None
        Index perturbation (``"label | cell type"`` with several cell types);
        ``truly DE genes`` first, then ``<metric> (<model>)`` columns. None
        without rows of ``model_name``.

    Examples
    --------
    >>> pp = pd.DataFrame({"model": ["m", "b"], "perturbation": ["X", "X"],
    ...                    "DES": [0.5, 0.25], "n_de_real": [4, 4]})
    >>> per_perturbation_summary(pp, "m", "b").to_dict("records")
    [{'truly DE genes': 4, 'DES (m)': 0.5, 'DES (b)': 0.25}]
    """
    if per_perturbation is None or "model" not in per_perturbation:
        return None
    pp = per_perturbation
    if model_name not in set(pp["model"]):
        return None
    keys = [c for c in ("cell_type", "perturbation") if c in pp.columns]
    skip = {"model", *keys, "n_de_real", "n_de_pred"}
    metric_cols = [c for c in pp.columns if c not in skip]
    models = [model_name] + ([baseline] if baseline and baseline in set(pp["model"]) else [])
    ours = pp[pp["model"] == model_name].set_index(keys)
    out = pd.DataFrame(index=ours.index)
    if "n_de_real" in ours:
        out["truly DE genes"] = ours["n_de_real"].astype(int)
    for c in metric_cols:
        for m in models:
            out[f"{c} ({m})"] = pp[pp["model"] == m].set_index(keys)[c].reindex(out.index)
    if len(keys) == 2:
        multi = out.index.get_level_values("cell_type").nunique() > 1
        out.index = [f"{p} | {ct}" if multi else str(p) for ct, p in out.index]
    out.index.name = "perturbation"
    return out
