"""Command-line failures a careless user meets: one line, exit 2, nothing overwritten.

Each test failed on the command line before issue 16 (a traceback, a clobbered file, a
silently different resumed run, an empty report)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from sktx.cli import _estimator, app
from sktx.cli._checks import check_demo_memory
from sktx.cli._rundir import RunLock
from sktx.datasets import make_perturbseq

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fast_model(monkeypatch):
    from sktx.baselines import LinearBaseline

    monkeypatch.setattr(
        _estimator, "_build_estimator", lambda cfg, quiet: LinearBaseline(**asdict(cfg.keys))
    )


@pytest.fixture(scope="module")
def sim():
    return make_perturbseq(n_cells=300, n_genes=60, n_perturbations=6, random_state=0)


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory, sim):
    path = tmp_path_factory.mktemp("data") / "sim.h5ad"
    sim.write_h5ad(path)
    return path


def _train(data, out, *extra):
    return _run(
        "train", "--data", data, "--out", out, "--epochs", "1", "--no-baselines", "-q", *extra
    )


# Run directories ---------------------------------------------------------------------------------


def test_finished_run_is_not_overwritten(sim_file, tmp_path, fast_model):
    run = tmp_path / "run"
    assert _train(sim_file, run).exit_code == 0
    before = (run / "model.sktx").stat().st_mtime_ns
    _one_line_error(_train(sim_file, run, "--seed", "1"), "already holds a run", "--overwrite")
    assert (run / "model.sktx").stat().st_mtime_ns == before
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    (run / "model.sktx").write_bytes(b"stale")  # replaced, never mixed with the new run
    assert _train(sim_file, run, "--seed", "1", "--overwrite").exit_code == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert (run / "model.sktx").read_bytes() != b"stale"


def test_locked_run_dir_names_the_holder(sim_file, tmp_path, fast_model):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        result = _train(sim_file, run)
    _one_line_error(result, "in use by another sktx run", f"pid {os.getpid()}")
    assert not (run / "model.sktx").exists()
    assert _train(sim_file, run).exit_code == 0  # released


def test_select_refuses_to_overwrite_its_input(sim_file, tmp_path):
    data = tmp_path / "x.h5ad"
    data.write_bytes(sim_file.read_bytes())
    size = data.stat().st_size
    _one_line_error(_run("select", "--data", data, "--out", data, "-q"), "--data input")
    assert data.stat().st_size == size


def test_predict_refuses_to_overwrite_its_input(tmp_path, sim):
    query = tmp_path / "q.h5ad"
    sim.write_h5ad(query)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.sktx").write_bytes(b"PK")
    result = _run("predict", "--model", run, "--query", query, "--out", query)
    _one_line_error(result, "--query input")


# Options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "needle"),
    [("foo", "choose auto, cpu or cuda"), ("cuda:99", "--device cuda:99")],
)
def test_bad_device_is_one_line(sim_file, tmp_path, fast_model, device, needle):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 99:  # pragma: no cover
        pytest.skip("this machine has 100 GPUs")
    _one_line_error(_train(sim_file, tmp_path / "run", "--device", device), needle)


def test_device_auto(sim_file, tmp_path, fast_model):
    import torch

    assert _train(sim_file, tmp_path / "run", "--device", "auto").exit_code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_n_jobs_above_the_cores_is_refused(sim):
    from sktx.regressor import PerturbationRegressor

    with pytest.raises(ValueError, match="CPU cores"):
        PerturbationRegressor(n_jobs=10**6, max_epochs=1).fit(sim)


def test_genes_too_many_for_memory_says_what_fits(tmp_path):
    result = _run("train", "--data", "demo", "--out", tmp_path / "run", "--genes", 10**7)
    _one_line_error(result, "--genes 10000000", "GB are available", "at most about --genes")
    with pytest.raises(Exception, match=r"at most about --genes (\d+)") as info:
        check_demo_memory(100_000, 4000, available=2 * 10**9)
    fits = int(info.value.args[0].split("--genes ")[-1].split()[0])
    check_demo_memory(fits, 4000, available=2 * 10**9)  # what it says fits, fits


# Data --------------------------------------------------------------------------------------------


def test_csv_as_data(tmp_path, sim):
    csv = tmp_path / "cells.csv"
    sim.obs.to_csv(csv)
    _one_line_error(_train(csv, tmp_path / "run"), "is not an .h5ad file", "CSV")


def test_gene_named_like_a_report_column(tmp_path, sim, fast_model):
    adata = sim.copy()
    names = list(adata.var_names)
    names[3] = "source"
    adata.var_names = names
    path = tmp_path / "source.h5ad"
    adata.write_h5ad(path)
    _one_line_error(_train(path, tmp_path / "run"), "'source'", "deltas.csv.gz")
    assert not (tmp_path / "run" / "model.sktx").exists()  # refused before training


def test_all_zero_x(tmp_path, sim):
    adata = sim.copy()
    adata.X = sp.csr_matrix(adata.shape, dtype=np.float32)
    path = tmp_path / "zero.h5ad"
    adata.write_h5ad(path)
    result = _train(path, tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    # (scanpy may warn about the empty cells first, as one `warning:` line)
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --data: every value of the expression matrix is zero")
    )


# Reports -----------------------------------------------------------------------------------------


def test_report_on_a_directory_without_a_run(tmp_path):
    _one_line_error(_run("report", tmp_path), "holds no sktx run")
    assert not (tmp_path / "report.html").exists()


def test_report_md_escapes_html():
    from sktx.report._html import _frame_md, _kv_md, metrics_table_md

    evil = "<img src=x onerror=alert(1)>|x"
    table = metrics_table_md(pd.DataFrame({"DES": [0.5]}, index=[evil]))
    frame = _frame_md(pd.DataFrame({"DES": [evil]}, index=[evil]))
    kv = _kv_md({evil: evil})
    for text in (table, frame, kv):
        assert "<img" not in text and "&lt;img" in text and "\\|x" in text


# Resume ------------------------------------------------------------------------------------------


@pytest.fixture
def interrupted_run(sim_file, tmp_path, monkeypatch):
    """A run interrupted after epoch 1 of 3, trained with --genes 40 --seed 3."""
    from skorch.callbacks import Callback

    from sktx.regressor import PerturbationRegressor

    class CtrlC(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 1:
                os.kill(os.getpid(), signal.SIGINT)

    def build(cfg, quiet):
        return PerturbationRegressor(
            **asdict(cfg.keys),
            max_epochs=cfg.epochs,
            set_size=8,
            d_model=16,
            n_layers=1,
            gene_sets=False,
            n_jobs=1,
            random_state=cfg.seed,
            crossfit=0,  # checkpoints and --resume are for single-network models
            callbacks=[CtrlC()],
        )

    monkeypatch.setattr(_estimator, "_build_estimator", build)
    run = tmp_path / "run"
    result = _run("train", "--data", sim_file, "--out", run, "--epochs", 3, "--genes", 40,
                  "--seed", 3, "--no-baselines", "-q")  # fmt: skip
    assert result.exit_code == 130, result.output
    assert f"continue with: sktx train --out {run} --resume" in result.stderr
    return run


def test_resume_reads_the_checkpoints_options(interrupted_run):
    result = _run("train", "--out", interrupted_run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    config = json.loads((interrupted_run / "config.json").read_text())
    assert (config["genes"], config["epochs"], config["seed"]) == (40, 3, 3)
    assert (interrupted_run / "model.sktx").exists()
    assert not (interrupted_run / "checkpoint.sktx").exists()  # removed after the model


def test_resume_refuses_other_options(interrupted_run):
    result = _run("train", "--out", interrupted_run, "--resume", "--genes", 30)
    _one_line_error(result, "--genes 30 (checkpoint: 40)")
    assert (interrupted_run / "checkpoint.sktx").exists()


def test_resume_refuses_other_data(interrupted_run, tmp_path):
    other = tmp_path / "other.h5ad"
    make_perturbseq(n_cells=280, n_genes=60, n_perturbations=6, random_state=1).write_h5ad(other)
    result = _run("train", "--data", other, "--out", interrupted_run, "--resume")
    _one_line_error(result, "the data differ from the checkpoint's")
    assert (interrupted_run / "checkpoint.sktx").exists()
