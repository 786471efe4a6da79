"""The estimator a run trains: built from a config, fitted or resumed, Ctrl-C safe."""

from __future__ import annotations

import signal
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from skorch.callbacks import Callback

from sktx.cli._app import BadInput, Strategy, _echo
from sktx.cli._io import _CHECKPOINT_FILE, _load_model_file, _save_model
from sktx.cli._rundir import check_resume, finish_before_exit
from sktx.pl._history import final_net as _final_net

if TYPE_CHECKING:
    from sktx.cli._runner import TrainConfig


def _make(cls, **params):
    """``cls(**params)`` keeping only the parameters ``cls`` accepts."""
    accepted = cls().get_params(deep=False)
    return cls(**{k: v for k, v in params.items() if k in accepted})


def _require(module: str, names: str) -> Any:
    import importlib

    try:
        mod = importlib.import_module(module)
        return [getattr(mod, n) for n in names.split(",")]
    except (ImportError, AttributeError) as exc:
        raise BadInput(
            f"`{module}` ({names}) is not available in this sktx installation: {exc}"
        ) from None


def _phase_plan(cfg: TrainConfig) -> list[int]:
    """Gene counts per phase; the last phase models ``--genes`` genes, as the plan says."""
    if cfg.phases:
        above = [p for p in cfg.phases if p > cfg.genes]
        if above:
            raise BadInput(
                f"--phases: {above} exceed --genes {cfg.genes}; the last phase models --genes "
                "genes (raise --genes or drop those phases)"
            )
        return sorted(set(cfg.phases) | {cfg.genes})
    return [p for p in (100, 1200, 2500, 5000) if p < cfg.genes] + [cfg.genes]


class _StopAfterCtrlC(Callback):
    """Ends a progressive fit at the next phase once Ctrl-C was pressed.

    skorch ends the running phase on KeyboardInterrupt and returns normally, so
    without this the next phase would start.
    """

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        if _STATE["interrupted"]:
            raise KeyboardInterrupt


# Pickled inside every progressive model: keep the name it had when the CLI was one module
# (``sktx.cli`` re-exports it) so model files stay loadable and byte-identical.
_StopAfterCtrlC.__module__ = "sktx.cli"

_STATE = {"interrupted": False}


def _build_estimator(cfg: TrainConfig, quiet: bool):
    from sklearn.pipeline import Pipeline

    from sktx.callbacks import TrainingProgress

    (GeneSelector,) = _require("sktx.selection", "GeneSelector")
    (PerturbationRegressor,) = _require("sktx.regressor", "PerturbationRegressor")
    keys = asdict(cfg.keys)
    progressive = cfg.strategy == Strategy.progressive.value
    phases = _phase_plan(cfg) if progressive else None
    callbacks = [TrainingProgress(disable=True if quiet else "auto", phases=phases)]
    if progressive:
        callbacks.append(_StopAfterCtrlC())
    model = _make(
        PerturbationRegressor,
        **keys,
        max_epochs=cfg.epochs,
        precision=cfg.precision,
        gradient_checkpointing=cfg.checkpointing,
        device=cfg.device,
        random_state=cfg.seed,
        verbose=0,
        callbacks=callbacks,
        # Score every held-out perturbation; unembeddable targets are named in the report.
        on_unknown_target="warn",
        start=cfg.start,
        **({"gene_sets": list(cfg.gene_sets)} if cfg.gene_sets else {}),
    )
    select = _make(GeneSelector, n_genes=cfg.genes, random_state=cfg.seed, **keys)
    pipe = Pipeline([("select", select), ("model", model)])
    if not progressive:
        return pipe
    from sktx.callbacks import progress_enabled

    (ProgressiveFit,) = _require("sktx.progressive", "ProgressiveFit")
    return _make(
        ProgressiveFit,
        estimator=pipe,
        phases=tuple(phases),
        epochs_per_phase=cfg.epochs,
        param="select__n_genes",
        random_state=cfg.seed,
        # one line per phase where no progress bar shows it (logs, CI)
        verbose=0 if quiet or progress_enabled("auto") else 1,
    )


def _selector(estimator):
    est = getattr(estimator, "estimator_", estimator)
    if hasattr(est, "steps"):
        return est.steps[0][1]
    return None


class _Interrupt:
    """Records Ctrl-C while still raising KeyboardInterrupt (skorch ends training on it)."""

    def __init__(self) -> None:
        self.hit = False

    def __enter__(self) -> _Interrupt:
        _STATE["interrupted"] = False
        self._old = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            self.hit = True
            _STATE["interrupted"] = True
            raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGINT, handler)
            # SIGTERM (kill, job schedulers) saves the checkpoint the same way
            self._old_term = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. some test runners): keep default
            self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        # the flag belongs to this fit (``hit`` keeps it): a later fit in the same process
        # (a notebook, a test session) must not stop at its first phase
        _STATE["interrupted"] = False
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            signal.signal(signal.SIGTERM, self._old_term)


def _epochs_text(n: int) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def _crossfit(estimator) -> int:
    """How many cross-fitted networks the model trains (0 or 1: a single network)."""
    return int(getattr(_final_net(estimator), "crossfit", 0) or 0)


def _epochs_done(estimator) -> int:
    net = _final_net(estimator)
    return len(getattr(net, "history", []) or [])


def _fit(cfg: TrainConfig, train, out: Path, *, quiet: bool, resume: bool, meta: dict):
    """Fit (or resume) the model; on Ctrl-C save a checkpoint and exit 130.

    ``meta`` (the run's configuration and data fingerprint) is stored with the
    checkpoint; resuming refuses a checkpoint whose ``meta`` differs. The checkpoint is
    left in place: the caller removes it once the model file is saved.
    """
    ckpt = out / _CHECKPOINT_FILE
    with _Interrupt() as interrupt:
        try:
            if resume:
                estimator, manifest = _load_model_file(ckpt)
                check_resume(manifest.get("meta") or {}, meta)
                done = _epochs_done(estimator)
                remaining = max(cfg.epochs - done, 0)
                _echo(quiet, f"resuming from {ckpt} after {_epochs_text(done)}; {remaining} to go")
                if remaining:
                    if getattr(estimator, "phase_history_", None) is not None:
                        raise BadInput("--resume continues `--strategy standard` runs only")
                    select = _selector(estimator)
                    net = _final_net(estimator)
                    X = select.transform(train) if select is not None else train
                    # partial_fit keeps weights, optimizer state and history; the data
                    # pipeline is rebuilt from the same seed.
                    net.set_params(max_epochs=remaining)
                    net.partial_fit(X)
                    net.set_params(max_epochs=cfg.epochs)
            else:
                estimator = _build_estimator(cfg, quiet)
                estimator.fit(train)
        except KeyboardInterrupt:
            if cfg.strategy == Strategy.progressive.value and interrupt.hit:
                what = "progressive runs cannot be resumed (--resume is for --strategy standard)"
            else:
                what = "interrupted before training started"
            typer.echo(f"\ninterrupted; {what}; nothing saved", err=True)
            raise typer.Exit(130) from None
    if interrupt.hit and _crossfit(estimator) >= 2:
        # Ctrl-C ends one network's training; the others would resume from the wrong place
        typer.echo(
            f"\ninterrupted; a cross-fitted model ({_crossfit(estimator)} networks) cannot be "
            "resumed (--resume continues single-network models, crossfit=0); nothing saved",
            err=True,
        )
        raise typer.Exit(130)
    if interrupt.hit and cfg.strategy == Strategy.progressive.value:
        typer.echo(
            "\ninterrupted; progressive runs cannot be resumed (--resume is for --strategy "
            "standard); nothing saved",
            err=True,
        )
        raise typer.Exit(130)
    if interrupt.hit:
        # a second Ctrl-C waits for the save; the previous checkpoint stays until it is done
        with finish_before_exit(f"the checkpoint {ckpt}"):
            _save_model(estimator, ckpt, meta=meta)
        typer.echo(
            f"\ninterrupted after {_epochs_text(_epochs_done(estimator))}; checkpoint saved to "
            f"{ckpt}.\n"
            f"continue with: sktx train --out {cfg.out} --resume",
            err=True,
        )
        raise typer.Exit(130)
    return estimator
