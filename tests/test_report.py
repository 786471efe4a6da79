"""Reports: RunRecord round trip, self-contained HTML, Markdown metric table."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sktx.report import RunRecord, lower_is_better, write_report


@pytest.fixture
def record() -> RunRecord:
    rng = np.random.RandomState(0)
    genes = [f"G{i:03d}" for i in range(40)]
    perts = ["A", "B", "A+B"]
    real = pd.DataFrame(rng.normal(size=(3, 40)), index=perts, columns=genes)
    pred = {
        "PerturbationRegressor": real * 0.8 + rng.normal(0, 0.2, size=real.shape),
        "mean": pd.DataFrame(np.tile(real.mean().to_numpy(), (3, 1)), index=perts, columns=genes),
    }
    history = pd.DataFrame(
        {
            "phase": [1, 1, 2, 2, 2],
            "n_genes": [10, 10, 40, 40, 40],
            "epoch": [1, 2, 1, 2, 3],
            "train_loss": [1.0, 0.8, 0.9, 0.6, 0.5],
            "valid_loss": [1.1, 0.9, 1.0, 0.7, 0.65],
            "cells_per_s": [900.0, 950.0, 500.0, 520.0, 510.0],
            "peak_rss_mb": [300.0, 310.0, 420.0, 430.0, 430.0],
            "dur": [0.5, 0.5, 1.0, 1.0, 1.0],
        }
    )
    metrics = pd.DataFrame(
        {"DES": [0.4, 0.2], "PDS": [0.7, 0.5], "MAE": [0.11, 0.15], "pearson_delta": [0.8, 0.3]},
        index=["PerturbationRegressor", "mean"],
    )
    per_pert = pd.DataFrame({"model": ["mean"] * 3, "perturbation": perts, "MAE": [0.1, 0.2, 0.15]})
    cats = pd.DataFrame({"gene": genes, "category": ["tf"] * 10 + ["hvg"] * 30})
    return RunRecord(
        config={"name": "unit", "model_name": "PerturbationRegressor", "epochs": 3},
        data={"n_cells": 500, "n_perturbations": 3, "heldout_perturbations": perts},
        history=history,
        metrics=metrics,
        per_perturbation=per_pert,
        categories=cats,
        real_delta=real,
        pred_delta=pred,
        notes=["unit-test run"],
    )


def test_lower_is_better():
    assert lower_is_better("MAE") and lower_is_better("mse_top20") and lower_is_better("valid_loss")
    assert not lower_is_better("DES") and not lower_is_better("pearson_delta")


def test_record_round_trip(record, tmp_path):
    record.save(tmp_path)
    back = RunRecord.load(tmp_path)
    pd.testing.assert_frame_equal(back.metrics, record.metrics, check_names=False)
    pd.testing.assert_frame_equal(back.history, record.history)
    assert back.notes == ["unit-test run"]
    assert set(back.pred_delta) == set(record.pred_delta)
    np.testing.assert_allclose(back.real_delta.loc["A+B"], record.real_delta.loc["A+B"])
    assert back.data["heldout_perturbations"] == ["A", "B", "A+B"]


def test_load_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunRecord.load(tmp_path / "nope")


def test_write_report_self_contained(record, tmp_path):
    record.save(tmp_path)
    path = write_report(tmp_path)
    page = path.read_text()
    # Every figure is embedded: four base64 PNGs, no external src/href.
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(http|/|\.\./)', page)
    # The trained model's row and the best-per-column marker are there.
    assert '<tr class="model"><td>PerturbationRegressor</td>' in page
    assert "class=best" in page
    assert "beats the best baseline" in page and "does not beat" not in page
    assert "phase" in page and "unit-test run" in page
    for key in ("loss", "throughput", "scatter", "heatmap"):
        assert (tmp_path / "figures" / f"{key}.png").stat().st_size > 1000


def test_markdown_metric_table(record, tmp_path):
    write_report(record, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| model | DES ↑ | PDS ↑ | MAE ↓ | pearson_delta ↑ |" in md
    row = next(line for line in md.splitlines() if line.startswith("| **PerturbationRegressor**"))
    assert "**0.11**" in row  # lowest MAE is bold
    assert "![Loss per epoch" in md and "figures/loss.png" in md
    assert "| tf | 10 |" in md


def test_report_without_training_history(record, tmp_path):
    record.history = None
    record.pred_delta = {}
    record.real_delta = None
    page = write_report(record, tmp_path).read_text()
    assert "data:image/png" not in page
    assert "PerturbationRegressor" in page


def test_record_needs_out_dir(record):
    with pytest.raises(ValueError, match="out_dir"):
        write_report(record)


def test_phase_history_frame_from_skorch_histories():
    from sktx.report import phase_history_frame

    phases = [
        {"genes": ["A", "B"], "history": [{"epoch": 1, "train_loss": 0.9, "batches": [{}]}]},
        {"n_genes": 4, "history": [{"train_loss": 0.5, "valid_loss": 0.6}, {"train_loss": 0.4}]},
    ]
    frame = phase_history_frame(phases)
    assert frame["phase"].tolist() == [1, 2, 2]
    assert frame["n_genes"].tolist() == [2, 4, 4]
    assert frame["train_loss"].tolist() == [0.9, 0.5, 0.4]
    assert "batches" not in frame


def test_a_failed_save_leaves_the_previous_files_whole(record, tmp_path, monkeypatch):
    record.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(self, path_or_buf=None, *args, **kwargs):
        # a crash half-way through writing a table
        if hasattr(path_or_buf, "write"):
            path_or_buf.write(b"model,DES\n")
        else:
            Path(path_or_buf).write_text("model,DES\n")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        record.save(tmp_path)
    # every file as before, and no temporary file left beside them
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
