"""The CLI-only path of docs/cli.md (train -> predict from a list -> evaluate) and its flags."""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
from typer.testing import CliRunner

from sktx.cli import _estimator, app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
SMALL = {"--genes": "60", "--cells": "600", "--epochs": "1"}
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def walkthrough() -> list[list[str]]:
    """The commands of the walkthrough block, continuation lines joined, sizes made small."""
    text = DOC.read_text()
    block = re.search(r"<!-- walkthrough.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/cli.md lost its walkthrough block"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "sktx", line
        for i, word in enumerate(words[:-1]):
            if word in SMALL:
                words[i + 1] = SMALL[word]
        commands.append(words[1:])
    return commands


@pytest.fixture
def fast_model(monkeypatch):
    """The linear baseline in place of the network: the CLI plumbing in seconds."""
    from sktx.baselines import LinearBaseline

    monkeypatch.setattr(
        _estimator, "_build_estimator", lambda cfg, quiet: LinearBaseline(**asdict(cfg.keys))
    )


def _walk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outputs = []
    for words in walkthrough():
        result = _run(*words)
        assert result.exit_code == 0, (words, result.output)
        outputs.append(result.output)
    run = tmp_path / "runs" / "walk"
    held = pd.read_csv(run / "heldout_perturbations.csv")
    pred = ad.read_h5ad(run / "pred.h5ad")
    labels = pred.obs["target_gene"].astype(str)
    assert set(labels) == {*held["target_gene"], "non-targeting"}
    assert labels.value_counts()[held["target_gene"]].tolist() == held["n_cells"].tolist()
    scores = pd.read_csv(run / "scores.csv", index_col="model")
    assert {"prediction", "mean"} <= set(scores.index)
    return outputs


def test_walkthrough_runs(tmp_path, monkeypatch, fast_model):
    outputs = _walk(tmp_path, monkeypatch)
    assert "training PerturbationRegressor (standard, 60 genes, 1 epoch)" in outputs[0]
    assert "seen in training" not in "".join(outputs)


@pytest.mark.slow
def test_walkthrough_runs_with_the_network(tmp_path, monkeypatch):
    _walk(tmp_path, monkeypatch)


def test_predict_from_a_list_and_the_warnings(tmp_path, monkeypatch, fast_model):
    monkeypatch.chdir(tmp_path)
    assert _run("train", "--data", "demo", "--out", "r", *sum(SMALL.items(), ())).exit_code == 0
    held = pd.read_csv("r/heldout_perturbations.csv")["target_gene"].tolist()
    a, b = held[0], held[1]
    result = _run(
        "predict", "--model", "r", "--data", "r/heldout.h5ad",
        "--perturbations", f"{a},{b}", "--n-cells", "3", "--out", "p.h5ad",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = ad.read_h5ad("p.h5ad")
    assert pred.obs["target_gene"].value_counts().to_dict() == {a: 3, b: 3}
    assert len(pred.uns["sktx"]["trained_perturbations"]) > 0
    # the real held-out cells are perturbed, not control cells: predicting from them warns
    result = _run("predict", "--model", "r", "--query", "r/heldout.h5ad", "--out", "bad.h5ad")
    assert result.exit_code == 0 and "are predicted from their own expression" in result.output
    # a ready query (controls relabelled) does not
    result = _run("predict", "--model", "r", "--query", "r/query.h5ad", "--out", "q.h5ad")
    assert result.exit_code == 0 and "warning" not in result.output
    # scoring perturbations the model was trained on warns, as one line
    trained = list(pred.uns["sktx"]["trained_perturbations"][:2])
    result = _run(
        "predict", "--model", "r", "--data", "r/heldout.h5ad",
        "--perturbations", ",".join(trained), "--n-cells", "3", "--out", "t.h5ad",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from sktx.datasets import make_perturbseq  # the demo's screen, all perturbations

    real = tmp_path / "all.h5ad"
    make_perturbseq(n_cells=600, n_genes=60, gene_names="symbols", random_state=0,
                    n_perturbations=24, n_combinations=8).write_h5ad(real)  # fmt: skip
    result = _run("evaluate", "--real", real, "--pred", "t.h5ad", "--baseline", "none")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if "seen in training" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: 2 scored perturbation(s)")
    assert "UserWarning" not in result.output


def test_predict_argument_errors(tmp_path, monkeypatch, fast_model):
    monkeypatch.chdir(tmp_path)
    assert _run("train", "--data", "demo", "--out", "r", *sum(SMALL.items(), ())).exit_code == 0
    for args, needle in (
        (["--perturbations", "A"], "--perturbations needs --data"),
        (["--data", "r/heldout.h5ad", "--perturbations", " , "], "expected labels"),
        (["--query", "r/query.h5ad", "--data", "r/heldout.h5ad"], "give one of them"),
        ([], "give --query FILE"),
    ):
        result = _run("predict", "--model", "r", "--out", "x.h5ad", *args)
        assert result.exit_code == 2 and needle in result.stderr, (args, result.output)


def test_plan_cells_and_phases_flags(tmp_path, monkeypatch, fast_model, norman_path):
    from sktx.cli._estimator import _phase_plan
    from sktx.cli._runner import TrainConfig, _plan

    cfg = TrainConfig(data="demo", out="x", strategy="progressive", genes=500, phases=[100, 300])
    assert _phase_plan(cfg) == [100, 300, 500]
    cfg.phases = _phase_plan(cfg)
    assert _plan(cfg, 2000) == "progressive, 3 phases of 100, 300, 500 genes, 20 epochs per phase"
    assert _plan(TrainConfig(data="demo", out="x", genes=3000, epochs=1), 500) == (
        "standard, 500 genes (--genes 3000 > 500 measured), 1 epoch"
    )
    from sktx.cli._app import BadInput

    with pytest.raises(BadInput, match="exceed --genes"):
        _phase_plan(TrainConfig(data="demo", out="x", genes=200, phases=[100, 300]))
    monkeypatch.chdir(tmp_path)
    result = _run("train", "--data", norman_path, "--out", "n", "--genes", "50", "--cells", "900",
                  "--epochs", "1", "--no-baselines")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"subsampling \d+ -> \d+ cells \(--cells 900", result.output)
    result = _run("train", "--data", "demo", "--out", "all", "--genes", "40", "--cells", "all",
                  "--epochs", "1", "--no-baselines")  # fmt: skip
    assert result.exit_code == 0 and "subsampling" not in result.output
    result = _run("train", "--data", "demo", "--out", "bad", "--cells", "many")
    assert result.exit_code == 2 and "--cells: expected a number" in result.stderr


def test_select_rows_say_one_thing(tmp_path):
    from sktx.cli._select import _readable

    table = pd.DataFrame(
        {"gene": ["PTGS2", "MYC"], "category": ["hvg", "tf"], "quota": ["tf", "tf"],
         "score": [1.0, 2.0], "rank": [1, 2]}
    )  # fmt: skip
    out = _readable(table)
    assert list(out.columns) == ["gene", "category", "spilled_from", "score", "rank"]
    assert out["spilled_from"].tolist()[0] == "tf" and pd.isna(out["spilled_from"][1])
    result = _run("select", "--data", "demo", "--genes", "40", "--out", tmp_path / "g.csv")
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "g.csv")
    assert "quota" not in written and (written["spilled_from"].dropna() != "hvg").all()


def test_messages_in_cli_words():
    from sktx.cli._messages import cli_wording
    from sktx.report._html import _fmt

    assert cli_wording("Pass `perturbation_key=` or `control_label=`.") == (
        "Pass `--perturbation-key` or `--control-label`."
    )
    result = _run("select", "--data", DOC, "--genes", "5", "--out", "x.csv")
    assert "perturbation_key=" not in result.output
    assert _fmt(1e-09) == "0" and _fmt(0.25) == "0.25"
