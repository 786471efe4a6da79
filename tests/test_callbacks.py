"""Progress bars: quiet outside a terminal, loss / cells/s / ETA inside one."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from skorch import NeuralNetRegressor

from sktx.callbacks import TrainingProgress, phase_progress, progress_enabled


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_ci(monkeypatch):
    for var in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD"):
        monkeypatch.delenv(var, raising=False)


def _net(progress, epochs=3):
    return NeuralNetRegressor(
        torch.nn.Linear(3, 1), max_epochs=epochs, batch_size=16, verbose=0, callbacks=[progress]
    )


def _xy():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 3)).astype("float32")
    return X, X.sum(axis=1, keepdims=True)


def test_progress_enabled(no_ci, monkeypatch):
    assert not progress_enabled("auto", file=io.StringIO())  # not a terminal
    assert progress_enabled("auto", file=FakeTTY())
    assert not progress_enabled(True, file=FakeTTY())
    assert progress_enabled(False, file=io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled("auto", file=FakeTTY())


def test_bars_show_loss_throughput_and_eta(no_ci):
    out = FakeTTY()
    progress = TrainingProgress(file=out)
    _net(progress).fit(*_xy())
    text = out.getvalue()
    assert "epochs: 100%" in text and "3/3" in text
    assert "loss=" in text and "val=" in text and "cells/s=" in text
    assert "<" in text  # tqdm's elapsed<remaining (ETA)
    assert "batches" in text
    assert progress.cells_per_s_ > 0 and progress.elapsed_ > 0


def test_quiet_when_not_a_terminal(no_ci):
    out = io.StringIO()
    _net(TrainingProgress(file=out)).fit(*_xy())
    assert out.getvalue() == ""
    out = FakeTTY()
    _net(TrainingProgress(file=out, disable=True)).fit(*_xy())
    assert out.getvalue() == ""


def test_callback_pickles_after_fit(no_ci):
    net = _net(TrainingProgress(file=FakeTTY()), epochs=1).fit(*_xy())
    clone = pickle.loads(pickle.dumps(net))
    assert clone.callbacks[0].epoch_bar_ is None


def test_regressor_throughput_is_reported():
    regressor = pytest.importorskip("sktx.regressor")
    from sktx.datasets import make_perturbseq

    adata = make_perturbseq(n_cells=200, n_genes=30, n_perturbations=4, random_state=0)
    progress = TrainingProgress(disable=True)
    model = regressor.PerturbationRegressor(
        max_epochs=2,
        set_size=8,
        d_model=16,
        n_layers=1,
        gene_sets=False,
        random_state=0,
        callbacks=[progress],
    ).fit(adata)
    assert progress.cells_per_s_ == pytest.approx(model.history[-1, "cells_per_s"])
    assert progress.cells_per_s_ > 0


def test_phase_progress(no_ci):
    out = FakeTTY()
    with phase_progress([100, 500], file=out) as bar:
        bar.update()
        bar.update()
    text = out.getvalue()
    assert "phase 1/2 · 100 genes" in text and "phase 2/2 · 500 genes" in text
    assert "2/2" in text
