"""skorch callbacks: progress bars that show loss, cells/s and ETA.

:class:`TrainingProgress` draws one bar over epochs and, inside it, one bar
over the minibatches of the running epoch, the way skorch's own
:class:`skorch.callbacks.ProgressBar` does, plus the numbers a Perturb-seq
user watches: training/validation loss, cells per second and the time left.
The bars are drawn on an interactive terminal and in Jupyter notebooks (tqdm's
widget with ipywidgets, else its text bar, without warnings) and switch
themselves off elsewhere or when a CI environment is detected, so logs of batch
jobs stay clean.

:func:`phase_progress` gives the same look to the phases of a
:class:`~sktx.progressive.ProgressiveFit` run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from skorch.callbacks import Callback

__all__ = ["TrainingProgress", "in_notebook", "phase_progress", "progress_enabled"]

# Environment variables set by common CI systems (GitHub Actions, GitLab, Jenkins, ...).
_CI_VARS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD")
# History keys that may hold the number of cells in a batch, most specific first.
_CELL_KEYS = ("n_cells", "cells", "train_cells", "train_batch_size")


def progress_enabled(disable: bool | str | None = "auto", file: IO[str] | None = None) -> bool:
    """Whether progress bars should be drawn.

    Parameters
    ----------
    disable : bool, "auto" or None, default="auto"
        ``True`` never draws, ``False`` always draws; ``"auto"`` (or ``None``)
        draws when ``file`` is an interactive terminal, or in a Jupyter notebook
        (default ``file``), and no CI environment variable (``CI``,
        ``GITHUB_ACTIONS``, ...) is set.
    file : file-like, optional
        Stream the bars go to; ``sys.stderr`` by default.

    Returns
    -------
    bool

    Examples
    --------
    >>> import io
    >>> progress_enabled("auto", file=io.StringIO())
    False
    >>> progress_enabled(False, file=io.StringIO())
    True
    """
    if disable is True:
        return False
    if disable is False:
        return True
    if any(os.environ.get(var) for var in _CI_VARS):
        return False
    if file is None and in_notebook():
        return True
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (where stderr is not a terminal).

    Examples
    --------
    >>> in_notebook()
    False
    """
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ip = shell.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _tqdm():
    """tqdm's notebook widget when ipywidgets is installed, else its plain-text bar.

    ``tqdm.auto`` in a notebook without ipywidgets warns "IProgress not found" and
    draws nothing useful; the text bar updates in place in notebook output too.
    """
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm
        except ImportError:
            from tqdm.std import tqdm
        return tqdm
    from tqdm.std import tqdm

    return tqdm


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


class TrainingProgress(Callback):
    """Progress bars over epochs and minibatches with loss, cells/s and ETA.

    Add it to any skorch net (``callbacks=[TrainingProgress()]``); the sktx
    command line adds it to :class:`~sktx.regressor.PerturbationRegressor`
    unless ``--quiet`` is given.

    Parameters
    ----------
    disable : bool or "auto", default="auto"
        ``"auto"`` draws on an interactive terminal or in a notebook, outside CI
        (see :func:`progress_enabled`); ``True`` silences the bars. With several
        TrainingProgress callbacks on one net only the last one draws.
    batches : bool, default=True
        Also draw a bar over the minibatches of the running epoch (removed
        when the epoch ends).
    desc : str, default="epochs"
        Label of the epoch bar; the gene count of the net (``genes_``) is added.
    phases : sequence of int, optional
        Gene counts of the phases of a :class:`~sktx.progressive.ProgressiveFit`
        run; the epoch bar of each phase is then labelled ``"phase 2/4 · 1200 genes"``.
    file : file-like, optional
        Stream for the bars; ``sys.stderr`` by default.

    Attributes
    ----------
    cells_per_s_ : float or None
        Training throughput of the last finished epoch.
    elapsed_ : float
        Seconds since training began.

    Notes
    -----
    Cells per batch are read from the batch history (``n_cells`` when the
    net records it — a training sample of the regressor is a *set* of cells —
    else skorch's ``train_batch_size``). The per-epoch throughput prefers the
    ``cells_per_s`` the net writes into its history.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetRegressor
    >>> from sktx.callbacks import TrainingProgress
    >>> net = NeuralNetRegressor(torch.nn.Linear(3, 1), max_epochs=2, verbose=0,
    ...                          callbacks=[TrainingProgress(disable=True)])
    >>> X, y = np.ones((20, 3), "float32"), np.ones((20, 1), "float32")
    >>> _ = net.fit(X, y)
    >>> net.callbacks[0].cells_per_s_ > 0
    True
    """

    def __init__(
        self,
        *,
        disable: bool | str = "auto",
        batches: bool = True,
        desc: str = "epochs",
        phases: Sequence[int] | None = None,
        file: IO[str] | None = None,
    ) -> None:
        self.disable = disable
        self.batches = batches
        self.desc = desc
        self.phases = phases
        self.file = file

    def initialize(self) -> TrainingProgress:
        self.epoch_bar_ = None
        self.batch_bar_ = None
        self.cells_per_s_ = None
        self.elapsed_ = 0.0
        return self

    def _bar(self, **kwargs: Any):
        tqdm = _tqdm()
        return tqdm(
            file=self.file if self.file is not None else sys.stderr,
            dynamic_ncols=True,
            disable=not (
                getattr(self, "_drawn", True) and progress_enabled(self.disable, self.file)
            ),
            **kwargs,
        )

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        # one set of bars: a net's default progress callback stands down for the user's
        mine = [cb for _, cb in getattr(net, "callbacks_", []) if isinstance(cb, TrainingProgress)]
        self._drawn = not mine or mine[-1] is self
        self._t0 = time.perf_counter()
        self.elapsed_ = 0.0
        total = getattr(net, "max_epochs", None)
        desc = self.desc
        genes = getattr(net, "genes_", None)
        if genes is not None:  # tells the phases of a progressive fit apart
            phases = list(self.phases or [])
            if len(genes) in phases:
                desc = f"phase {phases.index(len(genes)) + 1}/{len(phases)} · {len(genes)} genes"
            else:
                desc = f"{desc} ({len(genes)} genes)"
        self.epoch_bar_ = self._bar(total=total, desc=desc, unit="epoch", leave=True)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs) -> None:
        self._epoch_t0 = time.perf_counter()
        self._epoch_cells = 0
        if not self.batches or self.epoch_bar_ is None or self.epoch_bar_.disable:
            return
        total = None
        if len(net.history) > 1:  # what the previous epoch ran (nets may record it)
            total = net.history[-2].get("train_batch_count")
        if total is None and dataset_train is not None:
            try:
                params = net.get_params()
                size = params.get("iterator_train__batch_size", params.get("batch_size"))
                total = -(-len(dataset_train) // int(size)) if size and size > 0 else None
            except (TypeError, ValueError):
                total = None
        self.batch_bar_ = self._bar(total=total, desc="  batches", unit="batch", leave=False)

    def _batch_cells(self, net) -> int:
        row = net.history[-1, "batches", -1]
        for key in _CELL_KEYS:
            if key in row:
                return int(row[key])
        return 0

    def on_batch_end(self, net, batch=None, training=None, **kwargs) -> None:
        if not training:
            return
        try:
            self._epoch_cells += self._batch_cells(net)
        except (IndexError, KeyError):
            return
        if self.batch_bar_ is not None:
            rate = self._epoch_cells / max(time.perf_counter() - self._epoch_t0, 1e-9)
            post = {"cells/s": _fmt_rate(rate)}
            try:
                post["loss"] = f"{net.history[-1, 'batches', -1, 'train_loss']:.4g}"
            except KeyError:
                pass
            self.batch_bar_.set_postfix(post, refresh=False)
            self.batch_bar_.update()

    def on_epoch_end(self, net, **kwargs) -> None:
        row = net.history[-1]
        seconds = max(time.perf_counter() - self._epoch_t0, 1e-9)
        rate = row.get("cells_per_s")
        self.cells_per_s_ = float(rate) if rate is not None else self._epoch_cells / seconds
        self.elapsed_ = time.perf_counter() - self._t0
        if self.batch_bar_ is not None:
            self.batch_bar_.close()
            self.batch_bar_ = None
        if self.epoch_bar_ is not None:
            post = {}
            for key, label in (("train_loss", "loss"), ("valid_loss", "val")):
                if row.get(key) is not None:
                    post[label] = f"{row[key]:.4g}"
            post["cells/s"] = _fmt_rate(self.cells_per_s_)
            self.epoch_bar_.set_postfix(post, refresh=False)
            self.epoch_bar_.update()

    def on_train_end(self, net, X=None, y=None, **kwargs) -> None:
        for bar in (self.batch_bar_, self.epoch_bar_):
            if bar is not None:
                bar.close()
        self.batch_bar_ = None
        self.epoch_bar_ = None

    def __getstate__(self) -> dict:
        # tqdm objects hold the output stream and a lock: never pickle them.
        state = self.__dict__.copy()
        for key in ("epoch_bar_", "batch_bar_", "file"):
            state[key] = None
        return state


@contextmanager
def phase_progress(
    phases: Iterable[int],
    *,
    disable: bool | str = "auto",
    file: IO[str] | None = None,
) -> Iterator[Any]:
    """A bar over the phases of a progressive fit (``"phase 2/4 · 1200 genes"``).

    Parameters
    ----------
    phases : iterable of int
        Gene count of each phase.
    disable : bool or "auto", default="auto"
        As in :class:`TrainingProgress`.
    file : file-like, optional
        Stream for the bar; ``sys.stderr`` by default.

    Yields
    ------
    tqdm
        Call ``bar.update()`` when a phase ends; ``bar.set_description`` is
        set for the first phase.

    Examples
    --------
    >>> from sktx.callbacks import phase_progress
    >>> with phase_progress([100, 500], disable=True) as bar:
    ...     bar.update()
    """
    phases = list(phases)
    bar = _tqdm()(
        total=len(phases),
        desc=f"phase 1/{len(phases)} · {phases[0]} genes" if phases else "phases",
        unit="phase",
        file=file if file is not None else sys.stderr,
        disable=not progress_enabled(disable, file),
        leave=True,
    )
    original = bar.update

    def update(n: int = 1) -> None:
        original(n)
        if bar.n < len(phases):
            bar.set_description(f"phase {bar.n + 1}/{len(phases)} · {phases[bar.n]} genes")

    bar.update = update
    try:
        yield bar
    finally:
        bar.close()
