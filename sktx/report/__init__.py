"""Training reports: a self-contained HTML page and a Markdown summary per run.

A run directory (written by ``sktx train`` / ``sktx demo`` or
:meth:`RunRecord.save`) holds plain files — ``config.json``, ``data.json``,
``history.csv``, ``metrics.csv``/``metrics.json``, ``per_perturbation.csv``,
``genes.csv``, ``deltas.csv.gz``, ``reference_per_perturbation.csv`` (the
cell-mean reference the VCC score is scaled by, for its bootstrap) — and
:func:`write_report` turns them into ``report.html`` (figures embedded as base64
PNG, opens offline) and ``report.md`` (figures under ``figures/``).
:func:`evaluate_predictions` scores models on held-out perturbations and returns
the record's fields.
"""

from sktx.report._collect import evaluate_predictions, history_frame, phase_history_frame
from sktx.report._html import write_report
from sktx.report._record import RunRecord, lower_is_better

__all__ = [
    "RunRecord",
    "evaluate_predictions",
    "history_frame",
    "lower_is_better",
    "phase_history_frame",
    "write_report",
]
