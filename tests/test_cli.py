"""The `sktx` command line: every command, bad arguments, missing files, an end-to-end run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from skorch.callbacks import Callback
from typer.testing import CliRunner

import sktx
from sktx import log_normalize
from sktx.cli import _app, _estimator, _io, app

runner = CliRunner()
COMMANDS = ["train", "demo", "predict", "evaluate", "select", "report"]
NORMAN_KEYS = [
    "--perturbation-key", "perturbation", "--control-label", "control",
    "--cell-type-key", "cell_type",
]  # fmt: skip


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    # Exactly one line on stderr; stdout may hold progress lines printed before the error.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fast_model(monkeypatch):
    """Swap the neural net for the linear baseline: tests the CLI plumbing in seconds."""
    from sktx.baselines import LinearBaseline

    monkeypatch.setattr(
        _estimator, "_build_estimator", lambda cfg, quiet: LinearBaseline(**asdict(cfg.keys))
    )


@pytest.fixture
def sim_file(tmp_path_factory):
    from sktx.datasets import make_perturbseq

    adata = make_perturbseq(n_cells=500, n_genes=80, n_perturbations=8, random_state=0)
    path = tmp_path_factory.mktemp("data") / "sim.h5ad"
    adata.write_h5ad(path)
    return path


# --help, --version, python -m sktx --------------------------------------------------------


def test_root_help_lists_every_command():
    result = _run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_examples(command):
    result = _run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"sktx {command}" in result.output


def test_version():
    from importlib.metadata import version

    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"sktx {version('sktx')}"


def test_no_arguments_prints_help():
    result = _run()
    assert result.exit_code == 2 and "Commands:" in result.output


def test_python_dash_m():
    proc = subprocess.run(
        [sys.executable, "-m", "sktx", "train", "--data", "missing.h5ad", "--out", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --data: file 'missing.h5ad' not found"


# Bad arguments and missing files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--data", "demo"], "Missing option '--out'"),
        (["train", "--data", "demo", "--out", "x", "--strategy", "fast"], "--strategy"),
        (["train", "--data", "demo", "--out", "x", "--epochs", "0"], "--epochs"),
        (["train", "--data", "demo", "--out", "x", "--phases", "500,100"], "--phases"),
        (["train", "--data", "demo", "--out", "x", "--phases", "a,b"], "--phases"),
        (["train", "--data", "demo", "--out", "x", "--precision", "8"], "--precision"),
        (["train", "--data", "demo", "--out", "x", "--start", "mean"], "--start"),
        (["demo", "--bogus"], "No such option: --bogus"),
        (["evaluate", "--real", "a.h5ad"], "Missing option '--pred'"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_arguments(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_error(_run(*args), needle)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "nope.h5ad", "--out", "run"],
        ["demo", "--data", "nope.h5ad", "--out", "run"],
        ["select", "--data", "nope.h5ad", "--out", "genes.csv"],
        ["evaluate", "--real", "nope.h5ad", "--pred", "nope.h5ad"],
        ["predict", "--model", "norun", "--data", "nope.h5ad", "--out", "p.h5ad"],
        ["report", "norun"],
    ],
)
def test_missing_file(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(*args)
    _one_line_error(result)
    assert "nope.h5ad" in result.output or "norun" in result.output
    assert not (tmp_path / "run").exists()  # nothing written on bad input


def test_debug_shows_traceback(tmp_path):
    result = _run("train", "--data", tmp_path / "nope.h5ad", "--out", tmp_path / "r", "--debug")
    assert result.exit_code != 0
    assert isinstance(result.exception, _app.BadInput)


def test_bad_key_is_one_line(sim_file, tmp_path, fast_model):
    result = _run(
        "train", "--data", sim_file, "--out", tmp_path / "r", "--perturbation-key", "gene"
    )
    _one_line_error(result, "obs['gene']", "--perturbation-key")


def test_not_an_h5ad(tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    _one_line_error(_run("train", "--data", bad, "--out", tmp_path / "r"), "bad.h5ad")


def test_resume_without_checkpoint(tmp_path):
    result = _run("train", "--data", "demo", "--out", tmp_path / "r", "--resume")
    _one_line_error(result, "--resume", "checkpoint.sktx")


# Helpers ---------------------------------------------------------------------------------------


def test_subsample_is_stratified(sim):
    out = _io._subsample(sim, 200, "target_gene", seed=0)
    assert out.n_obs <= 200
    full = sim.obs["target_gene"].value_counts(normalize=True)
    part = out.obs["target_gene"].value_counts(normalize=True)
    assert set(part.index) == set(full.index)  # every perturbation kept
    assert np.abs(part.reindex(full.index) - full).max() < 0.02
    assert _io._subsample(sim, 10**6, "target_gene", seed=0) is sim


def test_split_holds_out_perturbations(sim):
    keys = _io.Keys()
    train, test = _io._split(sktx.prepare(sim), keys, 0.25, seed=0)
    train_p = set(train.obs["target_gene"]) - {"non-targeting"}
    test_p = set(test.obs["target_gene"]) - {"non-targeting"}
    assert test_p and not (train_p & test_p)
    assert (test.obs["target_gene"] == "non-targeting").any()


# Commands end to end with a fast stand-in model ----------------------------------------------


def test_train_predict_evaluate(sim_file, tmp_path, fast_model):
    run = tmp_path / "run"
    result = _run("train", "--data", sim_file, "--out", run, "--epochs", "1", "--cells", "400")
    assert result.exit_code == 0, result.output
    for name in ("model.sktx", "config.json", "metrics.json", "metrics.csv", "report.html"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"PerturbationRegressor", "mean", "linear", "control", "additive_joint"} <= set(metrics)
    assert set(metrics["mean"]) >= {"DES", "PDS", "MAE", "pearson_delta", "VCC"}
    config = json.loads((run / "config.json").read_text())
    assert config["cells"] == 400 and config["perturbation_key"] == "target_gene"
    data = json.loads((run / "data.json").read_text())
    assert data["cells"] <= 400 and data["heldout_perturbations"]
    assert "| model | DES ↑" in result.output

    # predict on query cells built from the held-out perturbations
    from sktx.model_selection import make_query

    real = log_normalize(ad.read_h5ad(sim_file))
    held = data["heldout_perturbations"]
    real = real[real.obs["target_gene"].isin([*held, "non-targeting"]).to_numpy()].copy()
    query_path, pred_path = tmp_path / "query.h5ad", tmp_path / "pred.h5ad"
    make_query(real).write_h5ad(query_path)
    result = _run("predict", "--model", run, "--data", query_path, "--out", pred_path)
    assert result.exit_code == 0, result.output
    pred = ad.read_h5ad(pred_path)
    assert set(pred.obs["target_gene"]) == set(held)

    real_path = tmp_path / "real.h5ad"
    real.write_h5ad(real_path)
    result = _run("evaluate", "--real", real_path, "--pred", pred_path, "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "s.csv", index_col="model")
    assert list(table.index) == ["prediction", "mean"]
    assert "| **prediction** |" in result.output
    # the CLI's own evaluation of the run agrees with `sktx evaluate` on the same cells
    assert (tmp_path / "s_per_perturbation.csv").exists()
    result = _run("evaluate", "--real", real_path, "--pred", pred_path, "--baseline", "none")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred.json").exists()
    # a real file with more perturbations than predicted: only the predicted ones are scored
    result = _run("evaluate", "--real", sim_file, "--pred", pred_path, "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    assert f"scoring the {len(held)} predicted perturbations" in result.output
    per_pert = pd.read_csv(tmp_path / "f_per_perturbation.csv")
    assert set(per_pert["perturbation"]) == set(held)
    # and one that lacks a predicted perturbation is rejected
    result = _run("evaluate", "--real", real_path, "--pred", sim_file)
    _one_line_error(result, "without real cells")


def test_run_experiment_returns_what_it_wrote(sim_file, tmp_path, fast_model):
    from sktx.cli._runner import TrainConfig, run_experiment

    cfg = TrainConfig(data=str(sim_file), out=str(tmp_path / "run"), cells=400, epochs=1)
    result = run_experiment(cfg)
    assert result.run_dir == tmp_path / "run" and cfg.model_name == "PerturbationRegressor"
    written = pd.read_csv(result.run_dir / "metrics.csv", index_col="model")
    assert list(result.metrics.index) == list(written.index)
    np.testing.assert_allclose(result.metrics.to_numpy(float), written.to_numpy(float))
    assert 0 < result.fit_seconds <= result.total_seconds
    assert type(result.estimator).__name__ == "LinearBaseline"  # the fast stand-in


def test_evaluate_rejects_wrong_key(sim_file, tmp_path):
    result = _run("evaluate", "--real", sim_file, "--pred", sim_file, "--perturbation-key", "x")
    _one_line_error(result, "obs['x']")


def test_demo_quiet(tmp_path, fast_model):
    result = _run("demo", "--out", tmp_path / "demo", "--cells", "600", "--genes", "60", "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert (tmp_path / "demo" / "report.html").exists()
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "| model | DES ↑" in md


def test_demo_prints_where_results_are(tmp_path, fast_model):
    result = _run("demo", "--out", tmp_path / "demo", "--cells", "600", "--genes", "60")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "demo" / "report.html") in result.output
    # re-render the report from the run directory
    result = _run("report", tmp_path / "demo", "--out", tmp_path / "again")
    assert result.exit_code == 0 and (tmp_path / "again" / "report.html").exists()


def test_select(tmp_path):
    pytest.importorskip("sktx.selection", reason="GeneSelector not available yet")
    out = tmp_path / "genes.csv"
    result = _run("select", "--data", "demo", "--genes", "50", "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 50 and {"gene", "category"} <= set(table.columns)


def test_label_options_detected_from_file(norman_path, tmp_path):
    pytest.importorskip("sktx.selection", reason="GeneSelector not available yet")
    out = tmp_path / "genes.csv"
    result = _run("select", "--data", norman_path, "--genes", "30", "--out", out)
    assert result.exit_code == 0, result.output
    assert "using --perturbation-key perturbation --control-label control" in result.output
    assert "--cell-type-key cell_type" in result.output
    assert len(pd.read_csv(out)) == 30


# Ctrl-C and --resume with the real model -----------------------------------------------------


class CtrlCAfterFirstEpoch(Callback):
    """Presses Ctrl-C (SIGINT to this process) when the first epoch ends."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 1:
            os.kill(os.getpid(), signal.SIGINT)


def _ctrl_c_model(monkeypatch, *, crossfit: int) -> None:
    """`sktx train` builds a tiny real regressor that presses Ctrl-C after its first epoch."""
    regressor = pytest.importorskip("sktx.regressor")

    def build(cfg, quiet):
        return regressor.PerturbationRegressor(
            **asdict(cfg.keys),
            max_epochs=cfg.epochs,
            set_size=8,
            d_model=16,
            n_layers=1,
            gene_sets=False,
            random_state=cfg.seed,
            crossfit=crossfit,
            callbacks=[CtrlCAfterFirstEpoch()],
        )

    monkeypatch.setattr(_estimator, "_build_estimator", build)


def test_ctrl_c_on_a_cross_fitted_model_saves_nothing(sim_file, tmp_path, monkeypatch):
    _ctrl_c_model(monkeypatch, crossfit=3)
    run = tmp_path / "run"
    result = _run("train", "--data", sim_file, "--out", run, "--epochs", "2", "--no-baselines")
    assert result.exit_code == 130, result.output
    assert "cross-fitted model (3 networks) cannot be resumed" in result.output
    assert not (run / "checkpoint.sktx").exists() and not (run / "model.sktx").exists()


def test_ctrl_c_saves_checkpoint_and_resume_finishes(sim_file, tmp_path, monkeypatch):
    _ctrl_c_model(monkeypatch, crossfit=0)  # --resume continues single-network models
    run = tmp_path / "run"
    args = ["train", "--data", sim_file, "--out", run, "--epochs", "2", "--no-baselines"]
    result = _run(*args)
    assert result.exit_code == 130, result.output
    assert "interrupted after 1 epoch" in result.output and "--resume" in result.output
    assert (run / "checkpoint.sktx").exists() and not (run / "model.sktx").exists()

    result = _run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "1 to go" in result.output
    assert not (run / "checkpoint.sktx").exists()
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2  # 1 epoch before Ctrl-C + 1 after --resume


@pytest.mark.slow  # ~10 s: two phases of the full pipeline
def test_progressive_strategy(sim_file, tmp_path):
    pytest.importorskip("sktx.progressive", reason="ProgressiveFit not available yet")
    run = tmp_path / "prog"
    result = _run(
        "train", "--data", sim_file, "--out", run, "--strategy", "progressive",
        "--phases", "20,80", "--genes", "80", "--epochs", "1", "--cells", "400",
        "--no-baselines", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    history = pd.read_csv(run / "history.csv")
    assert history["phase"].tolist() == [1, 2]
    assert history["n_genes"].tolist() == [20, 80]
    assert history["cells_per_s"].gt(0).all()
    assert json.loads((run / "config.json").read_text())["phases"] == [20, 80]
    assert "ProgressiveFit" in (run / "report.md").read_text()
    _one_line_error(_run("train", "--data", sim_file, "--out", run, "--resume"), "--resume")


# The real model on real data -------------------------------------------------------------------


def test_end_to_end_norman_one_epoch(norman_path, tmp_path):
    pytest.importorskip("sktx.regressor", reason="PerturbationRegressor not available yet")
    pytest.importorskip("sktx.selection", reason="GeneSelector not available yet")
    run = tmp_path / "norman"
    args = ["train", "--data", norman_path, *NORMAN_KEYS, "--genes", "100", "--epochs", "1"]
    args += ["--cells", "2500"]
    result = _run(*args, "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.md", "model.sktx", "metrics.csv", "history.csv"):
        assert (run / name).exists(), name
    html = (run / "report.html").read_text()
    md = (run / "report.md").read_text()
    for text in (html, md):
        for model in ("PerturbationRegressor", "mean", "linear"):
            assert model in text
    assert '<table class="metrics">' in html and "MAE ↓" in html
    assert "| model | DES ↑ | PDS ↑ | MAE ↓" in md
    history = pd.read_csv(run / "history.csv")
    # one epoch of each of the default model's three cross-fitted networks
    assert len(history) == 3 and sorted(history["member"]) == [0, 1, 2]
    assert np.isfinite(history["train_loss"]).all()
    data = json.loads((run / "data.json").read_text())
    assert data["cell types"] == ["A172", "T98G", "U87MG", "k562"]
    assert "scored perturbations" not in data  # every held-out perturbation was scored
    per_pert = pd.read_csv(run / "per_perturbation.csv")
    assert set(per_pert["perturbation"]) == set(data["heldout_perturbations"])


def test_ctrl_c_flag_does_not_outlive_the_run(sim_file, tmp_path, monkeypatch):
    # a Ctrl-C run leaves no flag behind: a progressive model fitted afterwards in the same
    # process (a notebook, a test session) trains instead of raising KeyboardInterrupt
    test_ctrl_c_on_a_cross_fitted_model_saves_nothing(sim_file, tmp_path, monkeypatch)
    assert _estimator._STATE["interrupted"] is False
    stop = _estimator._StopAfterCtrlC()
    stop.on_train_begin(None)  # would raise KeyboardInterrupt with a stale flag


def test_start_option_reaches_the_model_and_old_checkpoints_resume():
    # --start is passed to the regressor; a checkpoint written before the option
    # existed ran with the default and resumes with it, but not with another start
    from sktx.cli._app import BadInput
    from sktx.cli._estimator import _build_estimator
    from sktx.cli._rundir import check_resume
    from sktx.cli._runner import TrainConfig

    for start in ("shrunk", "knn"):
        pipe = _build_estimator(TrainConfig(data="demo", out="unused", start=start), quiet=True)
        assert pipe.named_steps["model"].start == start
    fingerprint = {"cells": 10, "genes": 5}  # the data fingerprint: the same data
    old = TrainConfig(data="demo", out="x").as_json()
    del old["start"]
    saved = {"config": old, "data": fingerprint}
    check_resume(
        saved, {"config": TrainConfig(data="demo", out="x").as_json(), "data": fingerprint}
    )
    knn = TrainConfig(data="demo", out="x", start="knn").as_json()
    with pytest.raises(BadInput, match="--start 'knn'"):
        check_resume(saved, {"config": knn, "data": fingerprint})
