"""The 2026 table of a run: cell-eval2's six metrics, baseline, replicate, scaled, overall.

Computed by :func:`vcc2026_scores` when the scored data hold raw counts (each model's
log1p prediction becomes counts through :func:`sktx._counts.prediction_output`), saved
as ``metrics_vcc2026.csv`` in the run directory and shown beside the 2025 table by
:func:`sktx.report.write_report`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

__all__ = ["FILE", "vcc2026_scores", "vcc2026_section"]

FILE = "metrics_vcc2026.csv"
_COLUMNS = ["model", "metric", "value", "baseline", "replicate", "scaled"]


def vcc2026_scores(test, query, preds: dict, keys: dict, seed: int = 0):
    """The 2026 table of every model's prediction, or ``(None, reason)`` when not possible.

    Parameters
    ----------
    test : PerturbationData
        The scored real cells (controls and held-out perturbed cells).
    query : PerturbationData
        The query the predictions were made from (its library sizes set the depth).
    preds : dict of str to AnnData
        Model name -> log1p prediction (one row per query cell).
    keys : dict
        ``perturbation_key``, ``control_label``, ``cell_type_key``.
    seed : int, default=0
        Seeds the sampled counts.

    Returns
    -------
    frame : DataFrame or None
        Long table ``model, metric, value, baseline, replicate, scaled``; the row
        ``metric == "score"`` holds the overall score.
    note : str or None
        Why the table is missing (no counts, cell-eval2 not installed, cell-eval2 refused).
    """
    from sktx._counts import prediction_output
    from sktx.metrics import vcc2026_evaluate

    if test.counts is None or query.counts is None:
        return None, None  # log1p data: the 2026 rules score counts only
    rows = []
    try:
        for name, pred in preds.items():
            # the whole gene axis, as a submission: genes outside a model's panel are the
            # query's own counts, so models with different panels are scored alike
            counts = prediction_output(
                pred, query, output="counts", all_genes=True, random_state=seed
            )
            counts.obs[keys["perturbation_key"]] = query.labels
            if keys.get("cell_type_key"):
                counts.obs[keys["cell_type_key"]] = query.cell_types
            res = vcc2026_evaluate(
                test,
                counts,
                perturbation_key=keys["perturbation_key"],
                control_label=keys["control_label"],
                context_key=keys.get("cell_type_key"),
            )
            for metric in res.metrics.index:
                rows.append(
                    [
                        name,
                        metric,
                        res.metrics[metric],
                        res.baseline[metric],
                        res.replicate[metric],
                        res.scaled[metric],
                    ]
                )
            rows.append([name, "score", float("nan"), 0.0, 1.0, res.score])
    except ImportError as exc:
        return None, f"2026 table skipped: {exc}"
    except ValueError as exc:  # cell-eval2 refuses e.g. a degenerate baseline
        first = str(exc).split(". ")[0].strip()
        return None, f"2026 table skipped: cell-eval2 refused the data ({first})."
    return pd.DataFrame(rows, columns=_COLUMNS), None


def _tables(frame: pd.DataFrame):
    scaled = frame.pivot(index="model", columns="metric", values="scaled")
    order = [m for m in frame["metric"].drop_duplicates() if m != "score"]
    scaled = scaled[[*order, "score"]].rename(columns={"score": "overall"})
    first = frame["model"].iloc[0]
    raw = frame[(frame["model"] == first) & (frame["metric"] != "score")]
    ref = raw.set_index("metric")[["baseline", "replicate"]].rename(
        columns={"baseline": "b (mean response)", "replicate": "r (replicate)"}
    )
    values = frame[frame["metric"] != "score"].pivot(
        index="metric", columns="model", values="value"
    )
    ref = ref.join(values[list(dict.fromkeys(frame["model"]))]).loc[order]
    return scaled.loc[list(dict.fromkeys(frame["model"]))], ref


def _words(frame: pd.DataFrame, model_name: str | None) -> str:
    from sktx.metrics._vcc2026 import describe_score

    scores = frame[frame["metric"] == "score"].set_index("model")["scaled"]
    name = model_name if model_name in scores.index else scores.index[0]
    return f"{name}: {describe_score(float(scores[name]))}."


def vcc2026_section(run_dir, model_name: str | None = None) -> tuple[list[str], list[str]]:
    """HTML parts and Markdown lines of the 2026 table; empty without ``metrics_vcc2026.csv``."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return [], []
    frame = pd.read_csv(path)
    scaled, ref = _tables(frame)
    words = _words(frame, model_name)
    caption = (
        "2026 rules (cell-eval2 preset vcc2026): each metric scaled (u − b) / (r − b), "
        "0 = mean-response baseline, 1 = split-half replicate; overall = mean of the six"
    )
    fmt = lambda df: df.map(lambda v: f"{v:.3f}" if pd.notna(v) else "")  # noqa: E731
    html = [
        "<h2>2026 score (raw counts, cell-eval2)</h2>",
        f'<div class="headline">{escape(words)}</div>',
        fmt(scaled).to_html(classes="metrics", escape=True),
        f'<div class="sub">{escape(caption)}</div>',
        "<h3>Raw metric values with the baseline b and the replicate r</h3>",
        fmt(ref).to_html(classes="metrics", escape=True),
    ]
    md = [
        "## 2026 score (raw counts, cell-eval2)",
        "",
        words,
        "",
        fmt(scaled).to_markdown(),
        "",
        caption + ".",
        "",
        "### Raw metric values with the baseline b and the replicate r",
        "",
        fmt(ref).to_markdown(),
        "",
    ]
    return html, md
