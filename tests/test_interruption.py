"""Interruption: a training run killed mid-epoch leaves a valid checkpoint, resuming
finishes with the uninterrupted run's epoch count, and a corrupt or partial checkpoint
is refused with a clear error."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sktx import _persist
from sktx.datasets import make_perturbseq

RUNNER = Path(__file__).with_name("_interrupt_runner.py")
EPOCHS = 3


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sim.h5ad"
    make_perturbseq(n_cells=300, n_genes=60, n_perturbations=6, random_state=0).write_h5ad(path)
    return path


def _train(sim_file, run, marker, *extra):
    args = ["train", "--data", str(sim_file), "--out", str(run), "--epochs", str(EPOCHS)]
    args += ["--no-baselines", "--quiet", *extra]
    return [sys.executable, str(RUNNER), str(marker), *args]


def _kill_mid_epoch_2(cmd, marker, sig):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"run ended before epoch 1 finished:\n{proc.communicate()[0]}")
        time.sleep(0.05)
    time.sleep(0.3)  # well inside epoch 2 (each batch sleeps 0.5 s there)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGINT,
        signal.SIGTERM,
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_killed_mid_epoch_then_resume(sim_file, tmp_path, sig):
    run, marker = tmp_path / "run", tmp_path / "epoch1.done"
    code, out = _kill_mid_epoch_2(_train(sim_file, run, marker), marker, sig)
    assert code == 130, out
    ckpt = run / "checkpoint.sktx"
    assert ckpt.exists() and not (run / "model.sktx").exists(), out
    est, manifest = _persist.load(ckpt)  # a valid, loadable checkpoint (no pickle)
    assert manifest["meta"]["data"]["cells"] == 300
    net = est.steps[-1][1] if hasattr(est, "steps") else est
    done = len(net.history)
    assert 1 <= done < EPOCHS
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp")), "a temp file was left"

    res = subprocess.run(
        _train(sim_file, run, tmp_path / "m2", "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (run / "model.sktx").exists() and not ckpt.exists()
    assert len(pd.read_csv(run / "history.csv")) == EPOCHS  # same as an uninterrupted run


def _one_line_error(res, *fragments):
    text = res.stdout + res.stderr
    assert res.returncode == 2, text
    assert "Traceback" not in text, text
    for frag in fragments:
        assert frag in text, text


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pickle at all", pickle.dumps({"not": "an estimator"})[:-3]],
    ids=["empty", "garbage", "truncated"],
)
def test_corrupt_checkpoint_is_refused(sim_file, tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.sktx").write_bytes(content)
    cmd = [sys.executable, "-m", "sktx", "train", "--data", str(sim_file), "--out", str(run)]
    res = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True, timeout=120)
    _one_line_error(res, "checkpoint.sktx")


def test_wrong_object_in_checkpoint_is_refused(sim_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.sktx").write_bytes(pickle.dumps({"not": "an estimator"}))
    cmd = [sys.executable, "-m", "sktx", "train", "--data", str(sim_file), "--out", str(run)]
    res = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True, timeout=120)
    _one_line_error(res, "checkpoint.sktx")
