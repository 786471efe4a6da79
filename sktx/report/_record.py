"""What a training run leaves behind, as one object that reads and writes a run directory."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sktx._atomic import atomic_write, write_text

__all__ = ["RunRecord", "lower_is_better"]

# Columns that are not registered metrics (losses, the 2026 table...): smaller is better when
# the name says so; everything else is "higher is better".
_LOWER_BETTER = ("mae", "mse", "rmse", "loss", "distance", "energy", "mmd", "nmae")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better.

    A metric of the registry (:func:`sktx.metrics.get_metric`, by name or report
    label) answers from its own ``greater_is_better``, so a metric added with
    :func:`~sktx.metrics.register_metric` gets the right arrow and best value;
    other columns (losses, errors) go by their name.

    Examples
    --------
    >>> lower_is_better("MAE"), lower_is_better("pearson_delta"), lower_is_better("train_loss")
    (True, False, True)
    """
    from sktx.metrics import available_metrics, get_metric

    for name in available_metrics():
        m = get_metric(name)
        if metric in (m.name, m.label):
            return not m.greater_is_better
    name = metric.lower()
    return any(token in name for token in _LOWER_BETTER)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def _write_csv(path: Path, frame: pd.DataFrame, **kwargs) -> None:
    # atomic, as every file of a run directory: a crash leaves the previous file whole
    with atomic_write(path) as fh:
        frame.to_csv(fh, compression="gzip" if path.suffix == ".gz" else None, **kwargs)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame | None:
    return pd.read_csv(path, **kwargs) if path.exists() else None


@dataclass
class RunRecord:
    """Everything a report shows about one run; saved as plain files in a run directory.

    Attributes
    ----------
    config : dict
        Options of the run (``config.json``).
    data : dict
        Data summary: cells, genes, perturbations, held-out perturbations
        (``data.json``).
    history : DataFrame, optional
        One row per epoch: ``phase``, ``n_genes``, ``epoch``, ``train_loss``,
        ``valid_loss``, ``cells_per_s``, ``peak_rss_mb``, ``dur``
        (``history.csv``); missing columns are simply not plotted.
    metrics : DataFrame, optional
        Models (index) x metrics, averaged over held-out perturbations
        (``metrics.csv`` and ``metrics.json``).
    per_perturbation : DataFrame, optional
        Long table ``model, perturbation, <metric>...`` (``per_perturbation.csv``).
    reference : DataFrame, optional
        Per-perturbation DES, PDS and MAE of the cell-mean baseline the VCC score
        is scaled against (``reference_per_perturbation.csv``); lets the report
        bootstrap the VCC score over perturbations.
    categories : DataFrame, optional
        Selected genes with their ``category`` (``genes.csv``).
    real_delta : DataFrame, optional
        Held-out perturbations x genes: real pseudobulk change vs control.
    pred_delta : dict of str to DataFrame
        The same for each model's prediction (``deltas.csv.gz`` holds both).
    notes : list of str
        Free-text remarks shown at the top (e.g. "interrupted at epoch 3").

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> rec = RunRecord(config={"epochs": 1}, metrics=pd.DataFrame({"MAE": [0.1]}, index=["mean"]))
    >>> d = tempfile.mkdtemp()
    >>> RunRecord.load(rec.save(d)).metrics.loc["mean", "MAE"]
    np.float64(0.1)
    """

    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    per_perturbation: pd.DataFrame | None = None
    reference: pd.DataFrame | None = None
    categories: pd.DataFrame | None = None
    real_delta: pd.DataFrame | None = None
    pred_delta: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def save(self, run_dir: str | Path) -> Path:
        """Write the record as plain files into ``run_dir`` (created if needed)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", self.config)
        _write_json(run_dir / "data.json", {**self.data, "notes": list(self.notes)})
        if self.history is not None:
            _write_csv(run_dir / "history.csv", self.history, index=False)
        if self.metrics is not None:
            _write_csv(run_dir / "metrics.csv", self.metrics, index_label="model")
            _write_json(run_dir / "metrics.json", self.metrics.to_dict(orient="index"))
        if self.per_perturbation is not None:
            _write_csv(run_dir / "per_perturbation.csv", self.per_perturbation, index=False)
        if self.reference is not None:
            _write_csv(run_dir / "reference_per_perturbation.csv", self.reference, index=False)
        if self.categories is not None:
            _write_csv(run_dir / "genes.csv", self.categories, index=False)
        if self.real_delta is not None:
            frames = [self.real_delta.assign(source="real")]
            frames += [d.assign(source=name) for name, d in self.pred_delta.items()]
            long = pd.concat(frames).rename_axis("perturbation").reset_index()
            cols = ["source", "perturbation", *self.real_delta.columns]
            _write_csv(run_dir / "deltas.csv.gz", long[cols], index=False)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        """Read a record written by :meth:`save` (missing files stay empty)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
        data = _read_json(run_dir / "data.json")
        notes = list(data.pop("notes", []) or [])
        metrics = _read_csv(run_dir / "metrics.csv", index_col="model")
        real, pred = None, {}
        deltas = _read_csv(run_dir / "deltas.csv.gz")
        if deltas is not None:
            deltas = deltas.set_index("perturbation")
            for source, frame in deltas.groupby("source", sort=False):
                frame = frame.drop(columns="source")
                if source == "real":
                    real = frame
                else:
                    pred[str(source)] = frame
        return cls(
            config=_read_json(run_dir / "config.json"),
            data=data,
            history=_read_csv(run_dir / "history.csv"),
            metrics=metrics,
            per_perturbation=_read_csv(run_dir / "per_perturbation.csv"),
            reference=_read_csv(run_dir / "reference_per_perturbation.csv"),
            categories=_read_csv(run_dir / "genes.csv"),
            real_delta=real,
            pred_delta=pred,
            notes=notes,
        )
