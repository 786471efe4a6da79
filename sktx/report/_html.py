"""Render a :class:`RunRecord` as a self-contained HTML page and a Markdown summary."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pandas as pd

from sktx.report import _plots
from sktx.report._compare import (
    best_baselines,
    bootstrap_intervals,
    compare_to_best,
    per_perturbation_summary,
)
from sktx.report._record import RunRecord, lower_is_better
from sktx.report._vcc2026 import vcc2026_section

__all__ = ["write_report"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff;
 box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin-top:32px;
 border-bottom:2px solid #eee;padding-bottom:4px}
.sub{color:#666;font-size:.9em}.note{background:#fff6e5;border-left:4px solid #f0a020;
 padding:6px 12px;margin:10px 0}
.headline{background:#eef5fb;border-left:4px solid #4393c3;padding:8px 14px;margin:14px 0}
.headline ul{margin:4px 0 0;padding-left:22px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.9em}
th,td{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.model td{background:#fdf1ec;font-weight:600}td.best{font-weight:700;color:#1a7f37}
.grid{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
img{max-width:100%;height:auto}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _md(value: object) -> str:
    """Text for report.md: HTML escaped as in report.html (Markdown renders raw HTML), and
    ``|`` escaped so a label cannot split a table cell."""
    return html.escape(str(value)).replace("|", "\\|")


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        if abs(value) < 5e-7:  # rounding noise of a zero (e.g. a VCC score's 1e-09)
            return "0"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        digits = 1 if abs(value) >= 100 else 2 if abs(value) >= 10 else 4
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value[:12])
        return shown + (f" (+{len(value) - 12} more)" if len(value) > 12 else "")
    return str(value)


def _kv_html(items: dict) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _kv_md(items: dict) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(_fmt(v))} |" for k, v in items.items()]
    return "\n".join(lines)


def _best(metrics: pd.DataFrame) -> dict[str, set]:
    """Rows holding the best value of each column (all of them on ties; none if all equal)."""
    best = {}
    for col in metrics.columns:
        values = pd.to_numeric(metrics[col], errors="coerce")
        if values.notna().sum() < 2 or values.nunique() < 2:
            continue
        target = values.min() if lower_is_better(col) else values.max()
        best[col] = set(values.index[np.isclose(values, target, rtol=1e-9, atol=1e-12)])
    return best


def _header(col: str) -> str:
    return f"{col} {'↓' if lower_is_better(col) else '↑'}"


def metrics_table_html(metrics: pd.DataFrame, model_name: str | None) -> str:
    best = _best(metrics)
    head = "".join(f"<th>{_esc(_header(c))}</th>" for c in metrics.columns)
    body = []
    for name, row in metrics.iterrows():
        cls = ' class="model"' if name == model_name else ""
        cells = "".join(
            f"<td{' class=best' if name in best.get(c, ()) else ''}>{_esc(_fmt(row[c]))}</td>"
            for c in metrics.columns
        )
        body.append(f"<tr{cls}><td>{_esc(name)}</td>{cells}</tr>")
    return f'<table class="metrics"><tr><th>model</th>{head}</tr>{"".join(body)}</table>'


def metrics_table_md(metrics: pd.DataFrame, model_name: str | None = None) -> str:
    """The metric table as Markdown; best value per column in bold."""
    best = _best(metrics)
    cols = list(metrics.columns)
    lines = ["| model | " + " | ".join(_header(c) for c in cols) + " |"]
    lines.append("|---|" + "---:|" * len(cols))
    for name, row in metrics.iterrows():
        label = f"**{_md(name)}**" if name == model_name else _md(name)
        cells = [f"**{_fmt(row[c])}**" if name in best.get(c, ()) else _fmt(row[c]) for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _phase_table(history: pd.DataFrame) -> pd.DataFrame | None:
    if history is None or history.empty or "phase" not in history:
        return None
    agg = {"epochs": ("phase", "size")}
    for col, how, name in (
        ("n_genes", "first", "genes"),
        ("train_loss", "last", "final train loss"),
        ("valid_loss", "last", "final valid loss"),
        ("cells_per_s", "mean", "cells/s (mean)"),
        ("peak_rss_mb", "max", "peak RSS (MB)"),
        ("peak_rss_gb", "max", "peak RSS (GB)"),
        ("dur", "sum", "wall time (s)"),
    ):
        if col in history and history[col].notna().any():
            agg[name] = (col, how)
    return history.groupby("phase", sort=True).agg(**agg)


def _frame_html(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in [frame.index.name or "", *frame.columns])
    rows = "".join(
        "<tr>"
        + f"<td>{_esc(idx)}</td>"
        + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row.tolist())
        + "</tr>"
        for idx, row in frame.iterrows()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _frame_md(frame: pd.DataFrame) -> str:
    cols = [_md(frame.index.name or ""), *map(_md, frame.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * len(frame.columns)]
    for idx, row in frame.iterrows():
        lines.append(f"| {_md(idx)} | " + " | ".join(_md(_fmt(v)) for v in row.tolist()) + " |")
    return "\n".join(lines)


def _data_items(record: RunRecord) -> dict:
    skip = {"heldout_perturbations", "train_perturbations", "genes_per_category"}
    items = {k: v for k, v in record.data.items() if k not in skip}
    if record.data.get("heldout_perturbations"):
        items["held-out perturbations"] = record.data["heldout_perturbations"]
    return items


def _categories(record: RunRecord) -> pd.DataFrame | None:
    counts = record.data.get("genes_per_category")
    if not counts and record.categories is not None and "category" in record.categories:
        counts = record.categories["category"].value_counts().to_dict()
    if not counts:
        return None
    frame = pd.DataFrame({"genes": pd.Series(counts, dtype=int)})
    frame.index.name = "category"
    return frame


def _models_for_plots(record: RunRecord, model_name: str | None) -> list[str]:
    names = list(record.pred_delta)
    ordered = [n for n in names if n == model_name]
    # Compare the trained model with the strongest baseline: by the overall VCC score when
    # there is one (single metrics such as DES often tie at 0), else the first column.
    m = record.metrics
    if m is not None and not m.empty:
        others = [n for n in m.index if n != model_name and n in names]
        col = "VCC" if "VCC" in m.columns else m.columns[0]
        vals = pd.to_numeric(m.loc[others, col], errors="coerce") if others else None
        if vals is not None and vals.notna().any():
            ordered.append(vals.idxmin() if lower_is_better(col) else vals.idxmax())
    return ordered or names[:2]


def _headline(record: RunRecord, model_name: str | None, intervals=None) -> list[str]:
    # the best baseline by VCC score, ties as ties (sktx/report/_compare.py)
    return compare_to_best(record.metrics, model_name, intervals)


def _spread(record: RunRecord, model_name: str | None):
    """Bootstrap intervals over held-out perturbations, and their table (models x metrics)."""
    pp = record.per_perturbation
    if pp is None or pp.empty or "model" not in pp or record.metrics is None:
        return None, None
    pairs = [(model_name, b) for b in best_baselines(record.metrics, model_name)]
    intervals = bootstrap_intervals(pp, record.reference, pairs=pairs if model_name else [])
    models = [m for m in record.metrics.index if m in set(intervals["model"])]
    if not models:
        return intervals, None
    table = intervals[intervals["model"].isin(models)].copy()
    table["cell"] = [f"{_fmt(r.mean)} [{_fmt(r.low)}, {_fmt(r.high)}]" for r in table.itertuples()]
    frame = table.pivot(index="model", columns="metric", values="cell")
    frame = frame.reindex(index=models, columns=[c for c in record.metrics.columns if c in frame])
    return intervals, frame


def _version() -> str:
    """The sktx that renders the report (a re-rendered report says so)."""
    from sktx import __version__

    return __version__


def write_report(run, out_dir: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` for a run.

    Parameters
    ----------
    run : str, path or RunRecord
        A run directory written by ``sktx train``/``sktx demo`` (or
        :meth:`RunRecord.save`), or a :class:`RunRecord` built in Python.
    out_dir : str or path, optional
        Where to write; defaults to the run directory. Created if needed.
        Figures are also written as PNG files to ``out_dir/figures`` for the
        Markdown summary; the HTML embeds them (base64) and opens offline.
    title : str, optional
        Page title; defaults to the run directory's name.

    Returns
    -------
    Path
        Path of ``report.html``.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> from sktx.report import RunRecord, write_report
    >>> rec = RunRecord(config={"epochs": 2},
    ...                 metrics=pd.DataFrame({"MAE": [0.10, 0.12]}, index=["model", "mean"]))
    >>> write_report(rec, tempfile.mkdtemp()).name
    'report.html'
    """
    if isinstance(run, RunRecord):
        record = run
        if out_dir is None:
            raise ValueError("`out_dir=` is required when `run` is a RunRecord, not a directory.")
        default_title = "sktx run"
    else:
        record = RunRecord.load(run)
        default_title = Path(run).resolve().name
    out = Path(out_dir if out_dir is not None else run)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    title = title or record.config.get("name") or default_title
    model_name = record.config.get("model_name")
    models = _models_for_plots(record, model_name)

    figures = {
        "loss": (
            "Loss per epoch (dashed lines: phase boundaries)",
            _plots.loss_png(record.history),
        ),
        "throughput": ("Throughput and peak memory", _plots.throughput_png(record.history)),
        "scatter": (
            "Predicted vs real pseudobulk change per held-out perturbation (one dot per gene)",
            _plots.scatter_png(record.real_delta, record.pred_delta, models=models),
        ),
        "heatmap": (
            "Top differentially expressed genes of held-out perturbations: real vs predicted",
            _plots.heatmap_png(record.real_delta, record.pred_delta, models=models),
        ),
    }
    for key, (_, png) in figures.items():
        if png is not None:
            (out / "figures" / f"{key}.png").write_bytes(png)

    def img(key: str) -> str:
        caption, png = figures[key]
        if png is None:
            return ""
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="sub">{_esc(caption)}</figcaption></figure>'
        )

    def md_img(key: str) -> str:
        caption, png = figures[key]
        return f"![{caption}](figures/{key}.png)\n" if png is not None else ""

    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    intervals, spread = _spread(record, model_name)
    headline = _headline(record, model_name, intervals)
    best = best_baselines(record.metrics, model_name) if record.metrics is not None else []
    per_pert = per_perturbation_summary(
        record.per_perturbation, model_name, best[0] if best else None
    )
    cats = _categories(record)
    phases = _phase_table(record.history)
    parts = [
        f"<h1>{_esc(title)}</h1>",
        f'<div class="sub">sktx {_esc(_version())} training report · generated {stamp}</div>',
        *(f'<div class="note">{_esc(n)}</div>' for n in record.notes),
    ]
    md = [f"# {_md(title)}", "", f"sktx {_version()} training report · generated {stamp}", ""]
    md += [f"> {_md(n)}\n" for n in record.notes]
    if headline:
        items = "".join(f"<li>{_esc(h)}</li>" for h in headline)
        parts.append(
            f'<div class="headline">On held-out perturbations, <b>{_esc(model_name)}</b>:'
            f"<ul>{items}</ul></div>"
        )
        md += [f"On held-out perturbations, **{_md(model_name)}**:", ""]
        md += [f"- {_md(h)}" for h in headline] + [""]
    if record.metrics is not None and not record.metrics.empty:
        n_held = len(record.data.get("heldout_perturbations", []) or [])
        n_scored = len(record.data.get("scored perturbations", []) or []) or n_held
        scope = f" ({n_held} held-out perturbations)" if n_held else ""
        if n_scored < n_held:
            scope = f" ({n_scored} of {n_held} held-out perturbations scored)"
        parts += [
            f"<h2>Metrics vs baselines{_esc(scope)}</h2>",
            metrics_table_html(record.metrics, model_name),
            '<div class="sub">↑ higher is better, ↓ lower is better; best per column in '
            "green. Metrics are averaged over held-out perturbations.</div>",
        ]
        md += [f"## Metrics vs baselines{scope}", "", metrics_table_md(record.metrics, model_name)]
        md += ["", "↑ higher is better, ↓ lower is better; best per column in bold.", ""]
    v26_html, v26_md = vcc2026_section(out if isinstance(run, RunRecord) else run, model_name)
    parts += v26_html
    md += v26_md
    if spread is not None:
        n = record.per_perturbation["model"].value_counts().iloc[0]
        caption = (
            f"Spread: mean [95% bootstrap interval] over the {n} scored perturbations "
            "(1,000 resamples, the same for every model)"
        )
        parts += [f"<h3>{_esc(caption)}</h3>", _frame_html(spread)]
        md += [f"### {caption}", "", _frame_md(spread), ""]
    if per_pert is not None:
        versus = f" vs {best[0]}" if best else ""
        caption = f"Per held-out perturbation: {model_name}{versus}"
        note = (
            "truly DE genes: genes differentially expressed in the real cells against their "
            "controls (Mann-Whitney, BH FDR < 0.05), the k of DES."
        )
        parts += [f"<h2>{_esc(caption)}</h2>", _frame_html(per_pert)]
        parts.append(f'<div class="sub">{_esc(note)}</div>')
        md += [f"## {caption}", "", _frame_md(per_pert), "", note, ""]
    parts += ["<h2>Predictions on held-out perturbations</h2>", img("scatter"), img("heatmap")]
    md += ["## Predictions on held-out perturbations", "", md_img("scatter"), md_img("heatmap")]
    parts += ["<h2>Training</h2>", img("loss"), img("throughput")]
    md += ["## Training", "", md_img("loss"), md_img("throughput")]
    if phases is not None:
        parts.append(_frame_html(phases))
        md += [_frame_md(phases), ""]
    data_block = f"<div><h3>Cells and perturbations</h3>{_kv_html(_data_items(record))}</div>"
    if cats is not None:
        data_block += f"<div><h3>Selected genes per category</h3>{_frame_html(cats)}</div>"
    parts += ["<h2>Data</h2>", f'<div class="grid">{data_block}</div>']
    md += ["## Data", "", _kv_md(_data_items(record)), ""]
    if cats is not None:
        md += ["Selected genes per category:", "", _frame_md(cats), ""]
    parts += ["<h2>Configuration</h2>", _kv_html(record.config)]
    md += ["## Configuration", "", _kv_md(record.config), ""]

    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return out / "report.html"
