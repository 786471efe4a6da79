"""Fault injection: a full disk, kill -9 at random points of training and saving, two
runs on one --out, a symlink planted at a temporary path, a crafted pickle. Afterwards
the previous file or the new one exists and loads; nothing half-written is ever loaded.

The default run keeps a few trials (the module takes well under a minute); the slow
marker runs many more.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sktx import _atomic, _persist
from sktx.baselines import BASELINES
from sktx.cli import _estimator, app
from sktx.cli._rundir import RunLock
from sktx.datasets import make_perturbseq

RUNNER = Path(__file__).with_name("_interrupt_runner.py")
runner = CliRunner()

# Saves models of alternating size to one path, forever, recording each finished save.
_SAVER = """
import sys
from pathlib import Path
from sktx import _persist
from sktx.baselines import BASELINES
from sktx.datasets import make_perturbseq
adata = make_perturbseq(n_cells=200, n_genes=40, n_perturbations=4, random_state=0)
models = [BASELINES["mean"]().fit(adata), BASELINES["additive_joint"]().fit(adata)]
path, i = Path(sys.argv[1]), 0
while True:
    _persist.save(models[i % 2], path, meta={"i": i})
    if i == 0:  # from now on a kill finds a previous file
        Path(sys.argv[2]).write_text("ready")
    i += 1
"""


@pytest.fixture(scope="module")
def sim():
    return make_perturbseq(n_cells=300, n_genes=60, n_perturbations=6, random_state=0)


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory, sim):
    path = tmp_path_factory.mktemp("data") / "sim.h5ad"
    sim.write_h5ad(path)
    return path


def _loads_or_absent(path: Path) -> None:
    """The file is absent, or whole: it loads (a torn write would not)."""
    if path.exists():
        _persist.load(path)


# Disk full -------------------------------------------------------------------------------------


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp && true"],
        capture_output=True,
        timeout=20,
    )
    return probe.returncode == 0


_DISK_FULL = """
import sys, errno
import numpy as np
from pathlib import Path
from sktx import _persist
from sktx.baselines import BASELINES
from sktx.datasets import make_perturbseq
adata = make_perturbseq(n_cells=200, n_genes=40, n_perturbations=4, random_state=0)
path = Path(sys.argv[1]) / "checkpoint.sktx"
_persist.save(BASELINES["mean"]().fit(adata), path)  # ~10 kB
big = BASELINES["mean"]().fit(adata)
big.padding_ = np.zeros(100_000)  # ~800 kB: more than the space left
try:
    _persist.save(big, path)
except OSError as exc:
    print("ENOSPC" if exc.errno == errno.ENOSPC else f"errno {exc.errno}")
else:
    print("saved")
model, _ = _persist.load(path)
print(type(model).__name__, sorted(p.name for p in Path(sys.argv[1]).iterdir()))
"""


def test_disk_full_keeps_the_previous_file(tmp_path):
    """On a tiny tmpfs (a real ENOSPC) when available, otherwise a writer that fails."""
    script = tmp_path / "full.py"
    script.write_text(_DISK_FULL)
    if _tmpfs_available():
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        # 72 kB: the first model fits, the second does not
        cmd = f"mount -t tmpfs -o size=72k tmpfs {mnt} && {sys.executable} {script} {mnt}"
        res = subprocess.run(
            ["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        lines = res.stdout.split("\n")
        assert lines[0] == "ENOSPC", res.stdout
        assert lines[1] == "MeanBaseline ['checkpoint.sktx']", res.stdout  # no temp file left
        return
    pytest.skip("no tmpfs here; test_disk_full_patched_writer covers it")  # pragma: no cover


class _FullDisk:
    """A file object that fails with ENOSPC after ``room`` bytes."""

    def __init__(self, fh, room: int) -> None:
        self._fh, self._room = fh, room

    def write(self, data) -> int:
        if len(data) > self._room:
            raise OSError(28, "No space left on device")
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


def test_disk_full_patched_writer(tmp_path, sim, monkeypatch):
    path = tmp_path / "model.sktx"
    _persist.save(BASELINES["mean"]().fit(sim), path, meta={"v": 1})
    real = _atomic._open_temp
    monkeypatch.setattr(
        _atomic, "_open_temp", lambda d, n: (lambda fh, p: (_FullDisk(fh, 4096), p))(*real(d, n))
    )
    with pytest.raises(OSError, match="No space left"):
        _persist.save(BASELINES["additive"]().fit(sim), path, meta={"v": 2})
    monkeypatch.undo()
    model, manifest = _persist.load(path)
    assert type(model).__name__ == "MeanBaseline" and manifest["meta"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.sktx"]


def _tiny(marker_cb=None):
    regressor = pytest.importorskip("sktx.regressor")

    def build(cfg, quiet):
        return regressor.PerturbationRegressor(
            **asdict(cfg.keys),
            max_epochs=cfg.epochs,
            set_size=8,
            d_model=16,
            n_layers=1,
            gene_sets=False,
            n_jobs=1,
            random_state=cfg.seed,
            crossfit=0,  # checkpoints and --resume are for single-network models
            callbacks=[marker_cb] if marker_cb is not None else None,
        )

    return build


def test_full_disk_at_the_final_save_keeps_the_checkpoint(sim_file, tmp_path, monkeypatch):
    """--resume used to delete the checkpoint before the model was written."""
    from skorch.callbacks import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 1:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_estimator, "_build_estimator", _tiny(CtrlC()))
    run = tmp_path / "run"
    args = ["train", "--data", str(sim_file), "--out", str(run), "--epochs", "2"]
    args += ["--no-baselines", "--genes", "40", "--quiet"]
    assert runner.invoke(app, args).exit_code == 130
    ckpt = run / "checkpoint.sktx"
    assert ckpt.exists()

    real = _persist.save

    def full(estimator, path, **kw):
        if Path(path).name == "model.sktx":
            raise OSError(28, "No space left on device")
        return real(estimator, path, **kw)

    monkeypatch.setattr(_persist, "save", full)
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert ckpt.exists() and not (run / "model.sktx").exists()
    _persist.load(ckpt)  # the training of the first run is still there


def test_second_ctrl_c_during_the_checkpoint_save(sim_file, tmp_path, monkeypatch):
    """The save finishes (and says so); the checkpoint is whole."""
    from skorch.callbacks import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 1:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_estimator, "_build_estimator", _tiny(CtrlC()))
    real = _atomic.write_with

    def press_again(path, writer):  # Ctrl-C again while the bytes are being written
        def write(fh):
            os.kill(os.getpid(), signal.SIGINT)
            writer(fh)

        return real(path, write)

    monkeypatch.setattr(_atomic, "write_with", press_again)
    run = tmp_path / "run"
    args = ["train", "--data", str(sim_file), "--out", str(run), "--epochs", "2"]
    result = runner.invoke(app, [*args, "--no-baselines", "--genes", "40", "--quiet"])
    assert result.exit_code == 130, result.output
    assert "still writing the checkpoint" in result.stderr
    assert "checkpoint saved" in result.stderr
    est, _ = _persist.load(run / "checkpoint.sktx")
    assert len(est.history) >= 1  # the epochs before the first Ctrl-C


# kill -9 ---------------------------------------------------------------------------------------


def _kill_saver_trials(tmp_path, n: int, seed: int) -> int:
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    rng = random.Random(seed)
    loaded = 0
    for _ in range(n):
        d = Path(tempfile.mkdtemp(dir=tmp_path))
        ready = d / "ready"
        proc = subprocess.Popen([sys.executable, str(script), str(d / "model.sktx"), str(ready)])
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside some save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        path = d / "model.sktx"
        _loads_or_absent(path)
        loaded += path.exists()
        assert path.exists(), "the previous model vanished"
        # temporary files may remain after kill -9; none has the model's name
        assert all(
            p.name.endswith(".tmp") for p in d.iterdir() if p.name not in ("model.sktx", "ready")
        )
    return loaded


def test_kill_9_while_saving(tmp_path):
    assert _kill_saver_trials(tmp_path, n=2, seed=0) >= 1


@pytest.mark.slow
def test_kill_9_while_saving_many(tmp_path):
    assert _kill_saver_trials(tmp_path, n=25, seed=1) >= 10


def _kill_training_trials(sim_file, tmp_path, n: int, seed: int) -> None:
    """SIGINT mid-epoch (a checkpoint save starts), then kill -9 at a random moment."""
    rng = random.Random(seed)
    for trial in range(n):
        run, marker = tmp_path / f"run{trial}", tmp_path / f"epoch1.{trial}"
        cmd = [sys.executable, str(RUNNER), str(marker), "train", "--data", str(sim_file)]
        cmd += ["--out", str(run), "--epochs", "3", "--no-baselines", "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if rng.random() < 0.7:
            proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for name in ("checkpoint.sktx", "model.sktx"):
            _loads_or_absent(run / name)
        assert not (run / "model.sktx").exists()  # killed before training ended
        # the directory is not left locked
        with RunLock(run):
            pass


def test_kill_9_during_training_and_checkpoint(sim_file, tmp_path):
    _kill_training_trials(sim_file, tmp_path, n=1, seed=0)


@pytest.mark.slow
def test_kill_9_during_training_and_checkpoint_many(sim_file, tmp_path):
    _kill_training_trials(sim_file, tmp_path, n=8, seed=1)


# Two runs on one --out ---------------------------------------------------------------------------


def test_two_concurrent_runs_on_one_out(sim_file, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "epoch1"
    cmd = [sys.executable, str(RUNNER), str(marker), "train", "--data", str(sim_file)]
    first = subprocess.Popen(
        [*cmd, "--out", str(run), "--epochs", "5", "--no-baselines", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "sktx", "train", "--data", str(sim_file), "--out", str(run)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by another sktx run (pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait(timeout=30)
    assert not (run / "model.sktx").exists()


# A symlink at a temporary path -------------------------------------------------------------------


def test_symlinked_temp_path_is_not_followed(tmp_path, sim, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    planted = [".model.sktx.planted.tmp", "model.tmp", "checkpoint.tmp", "model.sktx.tmp"]
    for name in planted:
        (run / name).symlink_to(victim)
    # make the first name tried the planted symlink (as if the attacker guessed it)
    names = iter(["planted", "fresh1234", "fresh5678"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    _persist.save(BASELINES["mean"]().fit(sim), run / "model.sktx")
    assert victim.read_text() == "precious"
    assert all((run / n).is_symlink() for n in planted)
    _persist.load(run / "model.sktx")


# A crafted pickle --------------------------------------------------------------------------------


def test_crafted_pickle_model_does_not_run(tmp_path, sim):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.sktx", "model.pkl"):
        (run / name).write_bytes(pickle.dumps(Evil()))
    query = tmp_path / "query.h5ad"
    sim.write_h5ad(query)
    for model in (run,):  # model.pkl itself: tests/test_security.py, in-process
        res = subprocess.run(
            [sys.executable, "-m", "sktx", "predict", "--model", str(model), "--query", str(query),
             "--out", str(tmp_path / "pred.h5ad")],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert res.returncode == 2 and "pickle" in res.stderr, res.stderr
        assert not marker.exists(), "the crafted pickle ran"
