"""The ``sktx`` command line: train, predict, evaluate, select genes, run the demo.

Every command prints a one-line ``error: ...`` and exits with status 2 on bad
arguments or bad input (missing file, unknown ``obs`` column, no control
cells, ...); ``--debug`` shows the full traceback instead. Ctrl-C during
training saves ``checkpoint.pkl`` in the run directory and exits with status
130; ``sktx train ... --resume`` continues from it.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import pickle
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from skorch.callbacks import Callback
from typer.core import TyperGroup

__all__ = ["app", "main"]

DEMO = "demo"
_MODEL_FILE = "model.pkl"
_CHECKPOINT_FILE = "checkpoint.pkl"
# The embedded demo screen: big enough to show held-out quality, small enough
# that `make demo` (simulate, select, train, 5 baselines, report) takes minutes on 2 cores.
# It simulates as many genes as the model uses, so every held-out target is measured.
_DEMO_SIM = {"n_perturbations": 24, "n_combinations": 8}
_DEMO_CELLS = 4000


class _Group(TyperGroup):
    """Prints usage errors as one line (``error: ... (see `sktx x --help`)``)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
            else:
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="sktx",
    cls=_Group,
    help=(
        "Predict single-cell responses to genetic perturbations (Perturb-seq).\n\n"
        "Start with `sktx demo` (simulated screen, about 2 minutes on 2 CPU cores), then\n"
        "`sktx train --data FILE.h5ad --out runs/NAME`. Every command has --help with examples."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


class Strategy(StrEnum):
    standard = "standard"
    progressive = "progressive"


class BaselineChoice(StrEnum):
    none = "none"
    mean = "mean"
    control = "control"


class BadInput(Exception):
    """A user error: reported as one line, exit status 2."""


# Shared options -------------------------------------------------------------------------------

PertKey = Annotated[
    str | None,
    typer.Option(
        "--perturbation-key",
        help="obs column naming each cell's perturbation [default: found in the file "
        "(target_gene, perturbation, ...), else target_gene].",
    ),
]
ControlLabel = Annotated[
    str | None,
    typer.Option(
        "--control-label",
        help="Label of control cells [default: found in the file (non-targeting, control, "
        "ctrl, ...), else non-targeting].",
    ),
]
CellTypeKey = Annotated[
    str | None,
    typer.Option(
        "--cell-type-key",
        help="obs column with the cell type; controls per type [default: cell_type, "
        "celltype or cell_line when present].",
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (data split, model).")]


GeneSets = Annotated[
    list[Path] | None,
    typer.Option(
        "--gene-sets",
        help="GMT/.txt gene sets for the model's prior (graph edges, embeddings of targets that "
        "are not measured), e.g. GO BP. Repeatable. [default: built-in curated lists]",
    ),
]


def _guard(func: Callable) -> Callable:
    """Turn input errors into ``error: <one line>`` + exit 2 unless ``--debug``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False) or os.environ.get("SKTX_DEBUG") == "1"
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.TyperException):
            raise
        except (BadInput, ValueError, OSError) as exc:
            # ValueError covers DataContractError and parameter errors of the estimators;
            # anything else is a bug and keeps its traceback.
            if debug:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _echo(quiet: bool, message: str = "") -> None:
    if not quiet:
        typer.echo(message)


# Data -----------------------------------------------------------------------------------------


@dataclass
class Keys:
    perturbation_key: str = "target_gene"
    control_label: str = "non-targeting"
    cell_type_key: str | None = None


# Tried in order when a label option is not given (common Perturb-seq conventions).
_PERT_KEYS = ("target_gene", "perturbation", "gene", "target", "condition", "guide_target")
_CONTROLS = ("non-targeting", "control", "ctrl", "NT", "non_targeting", "Non-Targeting")
_CELL_TYPE_KEYS = ("cell_type", "celltype", "cell_line")


def _detect_keys(path: str, pkey: str | None, ctrl: str | None, ctkey: str | None):
    """Fill label options the user did not give from the file's ``obs`` (read backed)."""
    import anndata as ad

    try:
        backed = ad.read_h5ad(path, backed="r")
    except (OSError, ValueError, KeyError):
        return pkey, ctrl, ctkey, []  # unreadable: the loader reports it
    try:
        obs = backed.obs
        found = []
        if pkey is None:
            pkey = next((k for k in _PERT_KEYS if k in obs.columns), None)
            if pkey not in (None, "target_gene"):
                found.append(f"--perturbation-key {pkey}")
        if ctrl is None and pkey in obs.columns:
            labels = set(obs[pkey].astype(str).unique().tolist())
            ctrl = next((c for c in _CONTROLS if c in labels), None)
            if ctrl not in (None, "non-targeting"):
                found.append(f"--control-label {ctrl}")
        if ctkey is None:
            ctkey = next((k for k in _CELL_TYPE_KEYS if k in obs.columns), None)
            if ctkey is not None:
                found.append(f"--cell-type-key {ctkey}")
    finally:
        backed.file.close()
    return pkey, ctrl, ctkey, found


def _keys_for(
    data: str,
    pkey: str | None,
    ctrl: str | None,
    ctkey: str | None,
    *,
    quiet: bool = True,
) -> Keys:
    if data == DEMO:
        # The simulator writes these; a user's flags would only break the demo.
        return Keys("target_gene", "non-targeting", None)
    if Path(data).is_file() and None in (pkey, ctrl, ctkey):
        pkey, ctrl, ctkey, found = _detect_keys(data, pkey, ctrl, ctkey)
        if found:
            _echo(quiet, f"using {' '.join(found)} (found in the file; pass options to override)")
    return Keys(pkey or "target_gene", ctrl or "non-targeting", ctkey)


def _existing_file(path: str | Path, option: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{option}: file {str(path)!r} not found")
    if path.is_dir():
        raise BadInput(f"{option}: {str(path)!r} is a directory, expected an .h5ad file")
    return path


def _load(
    data: str,
    keys: Keys,
    *,
    n_cells: int | None,
    seed: int,
    n_genes: int = 500,
    option: str = "--data",
):
    """Read ``data`` (a .h5ad file or ``demo``) as log1p AnnData following the contract."""
    from sktx._validation import log_normalize
    from sktx.datasets import load_h5ad, make_perturbseq

    if data == DEMO:
        # Real symbols so the selector's curated categories (TFs, cell cycle, ...) apply.
        try:
            adata = make_perturbseq(
                n_cells=n_cells or _DEMO_CELLS,
                n_genes=n_genes,
                gene_names="symbols",
                random_state=seed,
                **_DEMO_SIM,
            )
        except ImportError:  # no built-in gene sets in this installation
            adata = make_perturbseq(
                n_cells=n_cells or _DEMO_CELLS, n_genes=n_genes, random_state=seed, **_DEMO_SIM
            )
        return log_normalize(adata)
    path = _existing_file(data, option)
    try:
        return load_h5ad(
            path,
            perturbation_key=keys.perturbation_key,
            control_label=keys.control_label,
            cell_type_key=keys.cell_type_key,
        )
    except OSError as exc:
        raise BadInput(f"{option}: cannot read {str(path)!r} as .h5ad ({exc})") from None


def _load_query(data: str, keys: Keys):
    """Query cells: need the perturbation labels, not control cells; log1p like training."""
    import anndata as ad

    from sktx._validation import is_log_normalized, log_normalize, validate_adata

    path = _existing_file(data, "--data")
    try:
        query = ad.read_h5ad(path)
    except OSError as exc:
        raise BadInput(f"--data: cannot read {str(path)!r} as .h5ad ({exc})") from None
    validate_adata(query, **asdict(keys), require_control=False)
    return query if is_log_normalized(query) else log_normalize(query)


def _subsample(adata, n_cells: int | None, key: str, seed: int):
    """At most ``n_cells`` cells, each perturbation keeping its share (at least one cell)."""
    if n_cells is None or n_cells >= adata.n_obs:
        return adata
    rng = np.random.RandomState(seed)
    labels = adata.obs[key].astype(str).to_numpy()
    uniq, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    want = np.maximum(1, np.floor(counts * n_cells / adata.n_obs)).astype(int)
    keep = [
        rng.choice(np.flatnonzero(codes == i), want[i], replace=False) for i in range(len(uniq))
    ]
    return adata[np.sort(np.concatenate(keep))].copy()


def _split(adata, keys: Keys, holdout: float, seed: int):
    """Hold out a fraction of the perturbations; controls go to both sides."""
    from sktx.model_selection import PerturbationSplit

    perts = set(adata.obs[keys.perturbation_key].astype(str)) - {keys.control_label}
    if len(perts) < 2:
        raise BadInput(
            f"need at least 2 perturbations to hold some out, found {len(perts)} in "
            f"`obs[{keys.perturbation_key!r}]`"
        )
    n_splits = int(min(len(perts), max(2, round(1 / holdout))))
    cv = PerturbationSplit(
        n_splits,
        shuffle=True,
        random_state=seed,
        perturbation_key=keys.perturbation_key,
        control_label=keys.control_label,
    )
    train_idx, test_idx = next(cv.split(adata))
    return adata[train_idx].copy(), adata[test_idx].copy()


def _summary(adata, train, test, keys: Keys, source: str) -> dict:
    labels = adata.obs[keys.perturbation_key].astype(str)
    heldout = sorted(set(test.obs[keys.perturbation_key].astype(str)) - {keys.control_label})
    trained = sorted(set(train.obs[keys.perturbation_key].astype(str)) - {keys.control_label})
    out = {
        "source": source,
        "cells": int(adata.n_obs),
        "genes measured": int(adata.n_vars),
        "control cells": int((labels == keys.control_label).sum()),
        "perturbations": int(labels.nunique() - 1),
        "combinations (A+B)": int(sum("+" in p for p in set(labels) - {keys.control_label})),
        "training cells": int(train.n_obs),
        "training perturbations": len(trained),
        "held-out cells (incl. controls)": int(test.n_obs),
        "heldout_perturbations": heldout,
        "train_perturbations": trained,
    }
    if keys.cell_type_key:
        out["cell types"] = sorted(set(adata.obs[keys.cell_type_key].astype(str)))
    return out


# Estimators -----------------------------------------------------------------------------------


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


@dataclass
class TrainConfig:
    data: str
    out: str
    strategy: str = "standard"
    genes: int = 3000
    cells: int | None = 10000
    epochs: int = 20
    phases: list[int] | None = None
    holdout: float = 0.2
    precision: str = "auto"
    checkpointing: bool = False
    device: str = "cpu"
    seed: int = 0
    baselines: bool = True
    gene_sets: list[str] | None = None
    keys: Keys = field(default_factory=Keys)
    name: str = ""
    model_name: str = ""

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("keys"))
        return out


def _phase_plan(cfg: TrainConfig) -> list[int]:
    if cfg.phases:
        return list(cfg.phases)
    return [p for p in (100, 1200, 2500, 5000) if p < cfg.genes] + [cfg.genes]


class _StopAfterCtrlC(Callback):
    """Ends a progressive fit at the next phase once Ctrl-C was pressed.

    skorch ends the running phase on KeyboardInterrupt and returns normally, so
    without this the next phase would start.
    """

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        if _STATE["interrupted"]:
            raise KeyboardInterrupt


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


def _final_net(estimator):
    """The skorch net inside a Pipeline / ProgressiveFit (or the estimator itself)."""
    est = getattr(estimator, "estimator_", estimator)
    if hasattr(est, "steps"):
        est = est.steps[-1][1]
    return est


def _selector(estimator):
    est = getattr(estimator, "estimator_", estimator)
    if hasattr(est, "steps"):
        return est.steps[0][1]
    return None


def _history(estimator) -> pd.DataFrame | None:
    from sktx.report import history_frame, phase_history_frame

    net = _final_net(estimator)
    phases = getattr(estimator, "phase_history_", None)
    if phases:
        # The same net is warm-started through the phases: its history holds every epoch
        # with throughput and memory; the phase records say which epochs belong where.
        epochs = [int(p.get("epochs", 0)) for p in phases]
        if getattr(net, "history", None) is not None and len(net.history) == sum(epochs):
            frame = history_frame(net)
            frame["phase"] = np.repeat(np.arange(1, len(phases) + 1), epochs)
            frame["n_genes"] = np.repeat([p.get("n_genes") for p in phases], epochs)
            return frame
        return phase_history_frame(phases)
    if getattr(net, "history", None) is None:
        return None
    sel = _selector(estimator)
    n_genes = len(getattr(sel, "selected_genes_", [])) or None
    return history_frame(net, n_genes=n_genes)


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
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            signal.signal(signal.SIGTERM, self._old_term)


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        # an empty/partial/garbage file must not surface as a traceback (or as "aborted":
        # click turns a bare EOFError into Abort)
        raise BadInput(
            f"{str(path)!r} is corrupt or incomplete ({type(exc).__name__}: {exc}); "
            "delete it and train again"
        ) from None
    if not hasattr(obj, "fit"):
        raise BadInput(
            f"{str(path)!r} holds a {type(obj).__name__}, not a fitted sktx model; "
            "delete it and train again"
        )
    return obj


def _epochs_done(estimator) -> int:
    net = _final_net(estimator)
    return len(getattr(net, "history", []) or [])


def _fit(cfg: TrainConfig, train, out: Path, *, quiet: bool, resume: bool):
    """Fit (or resume) the model; on Ctrl-C save a checkpoint and exit 130."""
    ckpt = out / _CHECKPOINT_FILE
    with _Interrupt() as interrupt:
        try:
            if resume:
                estimator = _load_pickle(ckpt)
                done = _epochs_done(estimator)
                remaining = max(cfg.epochs - done, 0)
                _echo(quiet, f"resuming from {ckpt} after {done} epochs; {remaining} to go")
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
    if interrupt.hit and cfg.strategy == Strategy.progressive.value:
        typer.echo(
            "\ninterrupted; progressive runs cannot be resumed (--resume is for --strategy "
            "standard); nothing saved",
            err=True,
        )
        raise typer.Exit(130)
    if interrupt.hit:
        _save(estimator, ckpt)
        typer.echo(
            f"\ninterrupted after {_epochs_done(estimator)} epochs; checkpoint saved to {ckpt}.\n"
            f"continue with: sktx train --data {cfg.data} --out {cfg.out} --resume",
            err=True,
        )
        raise typer.Exit(130)
    if ckpt.exists():
        ckpt.unlink()
    return estimator


def _baselines(cfg: TrainConfig) -> dict:
    # (class, label, extra parameters); additive_joint is what the regressor starts from
    spec = [
        ("ControlBaseline", "control", {}),
        ("MeanBaseline", "mean", {}),
        ("AdditiveBaseline", "additive", {}),
        ("AdditiveBaseline", "additive_joint", {"effects": "joint"}),
        ("LinearBaseline", "linear", {}),
    ]
    try:
        import sktx.baselines as mod
    except ImportError:
        return {}
    keys = asdict(cfg.keys)
    out = {}
    for cls_name, label, extra in spec:
        cls = getattr(mod, cls_name, None)
        if cls is not None:
            out[label] = _make(cls, random_state=cfg.seed, **keys, **extra)
    return out


_UNKNOWN = re.compile(r"no embedding for target gene\(s\) (\[[^\]]*\])")


def _predict_each(estimator, query, key: str):
    """Predict the query; perturbations the model rejects are dropped and reported.

    Returns the prediction, ``{label: reason}`` of dropped perturbations and the target
    genes the model predicted without an embedding (it warns about those).
    """
    import anndata as ad

    def run(q):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = estimator.predict(q)
        for w in caught:
            match = _UNKNOWN.search(str(w.message))
            if match:
                unknown.update(ast.literal_eval(match.group(1)))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return pred

    unknown: set[str] = set()
    try:
        return run(query), {}, sorted(unknown)
    except ValueError:
        pass
    preds, failed = [], {}
    labels = query.obs[key].astype(str).to_numpy()
    for label in sorted(set(labels.tolist())):
        try:
            preds.append(run(query[labels == label].copy()))
        except ValueError as exc:
            failed[label] = str(exc).strip().splitlines()[0]
    if not preds:
        raise BadInput(f"the model could predict none of the held-out perturbations: {failed}")
    return ad.concat(preds, merge="same"), failed, sorted(unknown)


def _evaluate(cfg: TrainConfig, estimator, train, test, quiet: bool) -> tuple[dict, list[str]]:
    """Predict the held-out perturbations with the model and each baseline and score them."""
    from sktx.model_selection import make_query
    from sktx.report import evaluate_predictions

    keys = asdict(cfg.keys)
    key = cfg.keys.perturbation_key
    query = make_query(test, random_state=cfg.seed, **keys)
    pred, failed, unknown = _predict_each(estimator, query, key)
    notes = []
    if unknown:
        notes.append(
            f"{len(unknown)} held-out target gene(s) have no embedding in {cfg.model_name} "
            f"({', '.join(unknown)}): not among the modelled genes, not in the prior gene "
            "sets, never perturbed in training. Their perturbations were predicted from the "
            "model's baseline and its response to an anonymous target. `--gene-sets` with a "
            "comprehensive GMT such as GO BP embeds such targets."
        )
        _echo(quiet, "note: " + notes[-1])
    if failed:
        # Score every model on the same perturbations: those the model could predict.
        keep_q = ~query.obs[key].astype(str).isin(failed).to_numpy()
        keep_t = ~test.obs[key].astype(str).isin(failed).to_numpy()
        query, test = query[keep_q].copy(), test[keep_t].copy()
        first = next(iter(sorted(failed.items())))
        notes.append(
            f"{cfg.model_name} could not predict {len(failed)} of the held-out perturbations "
            f"({', '.join(sorted(failed))}); they are left out of every model's scores. "
            f"For {first[0]}: {first[1]} With the command line: `--gene-sets` with a "
            "comprehensive GMT such as GO BP lets the model embed such targets."
        )
        _echo(quiet, "note: " + notes[-1])
    preds = {cfg.model_name: pred}
    genes = list(pred.var_names)
    if cfg.baselines:
        for label, base in _baselines(cfg).items():
            t0 = time.perf_counter()
            base.fit(train[:, genes].copy())
            preds[label] = base.predict(query[:, genes].copy())
            seconds = time.perf_counter() - t0
            _echo(quiet, f"  baseline {label:<14} fitted and predicted in {seconds:.1f} s")
    scores = evaluate_predictions(test, preds, **keys)
    scores["scored_perturbations"] = sorted(
        set(test.obs[key].astype(str)) - {cfg.keys.control_label}
    )
    return scores, notes


def _run(cfg: TrainConfig, *, quiet: bool, resume: bool = False) -> Path:
    """Load, split, fit, evaluate, save, report. Returns the run directory."""
    from sktx.report import RunRecord, write_report

    t_start = time.perf_counter()
    out = Path(cfg.out)
    if cfg.data != DEMO:
        _existing_file(cfg.data, "--data")
    if resume and not (out / _CHECKPOINT_FILE).exists():
        raise BadInput(f"--resume: no {_CHECKPOINT_FILE} in {str(out)!r}; nothing to resume")
    out.mkdir(parents=True, exist_ok=True)
    cfg.name = cfg.name or out.resolve().name
    cfg.model_name = "ProgressiveFit" if cfg.strategy == "progressive" else "PerturbationRegressor"
    if cfg.strategy == Strategy.progressive.value:
        cfg.phases = _phase_plan(cfg)
    source = "simulated (sktx.datasets.make_perturbseq)" if cfg.data == DEMO else str(cfg.data)
    _echo(quiet, f"loading {source} ...")
    adata = _load(
        cfg.data,
        cfg.keys,
        n_cells=cfg.cells if cfg.data == DEMO else None,
        n_genes=max(cfg.genes, 50),
        seed=cfg.seed,
    )
    adata = _subsample(adata, cfg.cells, cfg.keys.perturbation_key, cfg.seed)
    train, test = _split(adata, cfg.keys, cfg.holdout, cfg.seed)
    summary = _summary(adata, train, test, cfg.keys, source)
    heldout = summary["heldout_perturbations"]
    _echo(
        quiet,
        f"{summary['cells']} cells x {summary['genes measured']} genes, "
        f"{summary['perturbations']} perturbations; holding out {len(heldout)}: "
        + ", ".join(heldout[:8])
        + (" ..." if len(heldout) > 8 else ""),
    )
    (out / "config.json").write_text(json.dumps(cfg.as_json(), indent=2) + "\n")
    _echo(
        quiet,
        f"training {cfg.model_name} ({cfg.strategy}, {cfg.genes} genes, {cfg.epochs} epochs) ...",
    )
    t_fit = time.perf_counter()
    estimator = _fit(cfg, train, out, quiet=quiet, resume=resume)
    fit_seconds = time.perf_counter() - t_fit
    _save(estimator, out / _MODEL_FILE)
    sel = _selector(estimator)
    categories = getattr(sel, "categories_", None)
    if categories is not None:
        summary["genes_per_category"] = categories["category"].value_counts().to_dict()
        summary["genes selected"] = len(categories)
    _echo(quiet, f"trained in {fit_seconds:.1f} s; evaluating on held-out perturbations ...")
    scores, notes = _evaluate(cfg, estimator, train, test, quiet)
    summary["genes scored"] = len(scores.pop("genes"))
    scored = scores.pop("scored_perturbations")
    if len(scored) < len(heldout):
        summary["scored perturbations"] = scored
    summary["fit wall time (s)"] = round(fit_seconds, 1)
    summary["total wall time (s)"] = round(time.perf_counter() - t_start, 1)
    record = RunRecord(
        config=cfg.as_json(),
        data=summary,
        history=_history(estimator),
        categories=categories,
        notes=notes,
        **scores,
    )
    record.save(out)
    write_report(out)
    return out


def _print_metrics(metrics: pd.DataFrame, model_name: str | None = None) -> None:
    from sktx.report._html import metrics_table_md

    typer.echo(metrics_table_md(metrics, model_name))


def _gene_set_paths(paths: list[Path] | None) -> list[str] | None:
    if not paths:
        return None
    return [str(_existing_file(p, "--gene-sets")) for p in paths]


def _parse_phases(phases: str | None) -> list[int] | None:
    if phases is None:
        return None
    try:
        values = [int(p) for p in phases.split(",") if p.strip()]
    except ValueError:
        raise BadInput(
            f"--phases: expected comma-separated gene counts such as 100,1200,2500, got {phases!r}"
        ) from None
    if not values or any(v <= 0 for v in values) or values != sorted(values):
        raise BadInput(f"--phases: gene counts must be positive and increasing, got {phases!r}")
    return values


def _examples(*lines: str) -> str:
    # "\b" keeps click from re-wrapping the block.
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" if line else "" for line in lines)


# Commands -------------------------------------------------------------------------------------


@app.command(
    epilog=_examples(
        "sktx train --data demo --genes 500 --epochs 5 --out runs/sim",
        "sktx train --data ../shared/data/norman2019_mcfaline2023_devel.h5ad \\",
        "    --perturbation-key perturbation --control-label control \\",
        "    --cell-type-key cell_type --gene-sets ../shared/genesets/go_bp_2021.gmt \\",
        "    --genes 500 --epochs 20 --out runs/norman",
        "sktx train --data screen.h5ad --strategy progressive \\",
        "    --phases 100,1200,2500,5000 --genes 5000 --out runs/prog",
        "sktx train --data screen.h5ad --out runs/norman --resume   # after Ctrl-C",
    )
)
@_guard
def train(
    data: Annotated[
        str, typer.Option("--data", help="An .h5ad file, or `demo` for the simulator.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    strategy: Annotated[
        Strategy, typer.Option("--strategy", help="One fit, or phases over growing gene sets.")
    ] = Strategy.standard,
    genes: Annotated[int, typer.Option("--genes", min=1, help="Genes to select and model.")] = 3000,
    cells: Annotated[
        int | None,
        typer.Option(
            "--cells", min=2, help="Subsample to this many cells (stratified by perturbation)."
        ),
    ] = 10000,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs (per phase).")] = 20,
    phases: Annotated[
        str | None, typer.Option("--phases", help="Gene counts per phase, e.g. 100,1200,2500,5000.")
    ] = None,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.01, max=0.5, help="Fraction of perturbations held out."),
    ] = 0.2,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    precision: Annotated[
        str, typer.Option("--precision", help="auto | 32 | bf16 | 16 (autocast).")
    ] = "auto",
    checkpointing: Annotated[
        bool, typer.Option("--checkpointing/--no-checkpointing", help="Gradient checkpointing.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    seed: Seed = 0,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Also score the baselines.")
    ] = True,
    gene_sets: GeneSets = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from checkpoint.pkl in --out (after Ctrl-C).")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a model with held-out perturbations; save model, config, metrics and report."""
    if precision not in ("auto", "32", "bf16", "16"):
        raise BadInput(f"--precision: choose auto, 32, bf16 or 16, got {precision!r}")
    cfg = TrainConfig(
        data=data,
        out=str(out),
        strategy=strategy.value,
        genes=genes,
        cells=cells,
        epochs=epochs,
        phases=_parse_phases(phases),
        holdout=holdout,
        precision=precision,
        checkpointing=checkpointing,
        device=device,
        seed=seed,
        baselines=baselines,
        gene_sets=_gene_set_paths(gene_sets),
        keys=_keys_for(data, perturbation_key, control_label, cell_type_key, quiet=quiet),
    )
    run_dir = _run(cfg, quiet=quiet, resume=resume)
    if not quiet:
        _print_metrics(pd.read_csv(run_dir / "metrics.csv", index_col="model"), cfg.model_name)
        typer.echo(f"\nmodel, metrics and report in {run_dir}/ (open {run_dir}/report.html)")


@app.command(
    epilog=_examples(
        "sktx demo                                # simulated screen -> runs/demo",
        "sktx demo --epochs 10 --out runs/demo10",
        "sktx demo --data ../shared/data/norman2019_mcfaline2023_devel.h5ad \\",
        "    --gene-sets ../shared/genesets/go_bp_2021.gmt",
    )
)
@_guard
def demo(
    data: Annotated[
        str, typer.Option("--data", help="`demo` (embedded simulator) or an .h5ad file.")
    ] = DEMO,
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 8,
    genes: Annotated[int, typer.Option("--genes", min=1, help="Genes to select and model.")] = 500,
    cells: Annotated[
        int | None, typer.Option("--cells", min=2, help="Cells (simulated, or subsampled).")
    ] = None,
    strategy: Annotated[Strategy, typer.Option("--strategy")] = Strategy.standard,
    gene_sets: GeneSets = None,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    seed: Seed = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """The main job: train with held-out perturbations, compare with baselines, write a report."""
    t0 = time.perf_counter()
    cfg = TrainConfig(
        data=data,
        out=str(out),
        strategy=strategy.value,
        genes=genes,
        cells=cells,
        epochs=epochs,
        seed=seed,
        gene_sets=_gene_set_paths(gene_sets),
        keys=_keys_for(data, perturbation_key, control_label, cell_type_key, quiet=quiet),
    )
    run_dir = _run(cfg, quiet=quiet)
    if quiet:
        return
    metrics = pd.read_csv(run_dir / "metrics.csv", index_col="model")
    typer.echo("\nHeld-out perturbations (↑ higher is better, ↓ lower is better):\n")
    _print_metrics(metrics, cfg.model_name)
    typer.echo(f"\nDone in {time.perf_counter() - t0:.0f} s. Results:")
    for name, what in (
        ("report.html", "report (open in a browser; works offline)"),
        ("report.md", "Markdown summary"),
        ("metrics.csv", "metrics per model (also metrics.json, per_perturbation.csv)"),
        (_MODEL_FILE, "fitted model (sktx predict --model " + str(run_dir) + " ...)"),
    ):
        typer.echo(f"  {run_dir / name}  {what}")


@app.command(
    epilog=_examples(
        "sktx predict --model runs/norman --data query.h5ad --out pred.h5ad",
        "",
        "The query holds control cells whose obs[perturbation_key] names the",
        "perturbation to simulate (see sktx.model_selection.make_query).",
    )
)
@_guard
def predict(
    model: Annotated[Path, typer.Option("--model", help="Run directory (or its model.pkl).")],
    data: Annotated[str, typer.Option("--data", help="Query .h5ad (control cells, relabelled).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the predicted .h5ad.")],
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict perturbed expression for query cells with a trained model."""
    path = model / _MODEL_FILE if model.is_dir() else model
    if not path.exists():
        raise BadInput(f"--model: no fitted model at {str(path)!r}; train one with `sktx train`")
    saved = {}
    if (path.parent / "config.json").exists():
        saved = json.loads((path.parent / "config.json").read_text())
    keys = Keys(
        perturbation_key or saved.get("perturbation_key", "target_gene"),
        control_label or saved.get("control_label", "non-targeting"),
        cell_type_key or saved.get("cell_type_key"),
    )
    estimator = _load_pickle(path)
    query = _load_query(data, keys)
    pred = estimator.predict(query)
    out.parent.mkdir(parents=True, exist_ok=True)
    pred.write_h5ad(out)
    _echo(quiet, f"predicted {pred.n_obs} cells x {pred.n_vars} genes -> {out}")


def _restrict_to_predicted(real, pred, keys: Keys, quiet: bool):
    """Score the perturbations the prediction covers; reject ones the real data lacks."""
    key, ctrl = keys.perturbation_key, keys.control_label
    real_labels = real.obs[key].astype(str)
    predicted = set(pred.obs[key].astype(str)) - {ctrl}
    unknown = sorted(predicted - set(real_labels))
    if unknown:
        raise BadInput(
            f"--pred has perturbations without real cells in --real: {unknown[:5]}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    if not predicted:
        raise BadInput(f"--pred has no perturbed cells (only `{ctrl}` in `obs[{key!r}]`)")
    unscored = sorted(set(real_labels) - predicted - {ctrl})
    if unscored:
        _echo(
            quiet,
            f"scoring the {len(predicted)} predicted perturbations; "
            f"{len(unscored)} more in --real are not predicted and not scored",
        )
        return real[real_labels.isin([*predicted, ctrl]).to_numpy()].copy()
    return real


@app.command(
    epilog=_examples(
        "sktx evaluate --real heldout.h5ad --pred pred.h5ad",
        "sktx evaluate --real heldout.h5ad --pred pred.h5ad --baseline none --out scores",
        "",
        "Writes <out>.json, <out>.csv (mean metrics per model) and",
        "<out>_per_perturbation.csv.",
    )
)
@_guard
def evaluate(
    real: Annotated[str, typer.Option("--real", help="Real cells (.h5ad) incl. controls.")],
    pred: Annotated[str, typer.Option("--pred", help="Predicted cells (.h5ad).")],
    baseline: Annotated[
        BaselineChoice,
        typer.Option("--baseline", help="Also score a baseline built from the real data."),
    ] = BaselineChoice.mean,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output prefix [default: <pred> without .h5ad].")
    ] = None,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Score predictions against real cells with the VCC metrics (DES, PDS, MAE, ...)."""
    import anndata as ad

    from sktx.metrics import build_mean_baseline
    from sktx.report import evaluate_predictions

    keys = _keys_for(real, perturbation_key, control_label, cell_type_key, quiet=quiet)
    real_ad = _load(real, keys, n_cells=None, seed=0, option="--real")
    pred_path = _existing_file(pred, "--pred")
    pred_ad = ad.read_h5ad(pred_path)
    if keys.perturbation_key not in pred_ad.obs:
        raise BadInput(
            f"--pred: `obs[{keys.perturbation_key!r}]` not found; pass --perturbation-key"
        )
    real_ad = _restrict_to_predicted(real_ad, pred_ad, keys, quiet)
    preds = {"prediction": pred_ad}
    kw = asdict(keys)
    if baseline is BaselineChoice.mean:
        preds["mean"] = build_mean_baseline(real_ad, **kw)
    elif baseline is BaselineChoice.control:
        (ControlBaseline,) = _require("sktx.baselines", "ControlBaseline")
        from sktx.model_selection import make_query

        query = make_query(real_ad, **kw)
        preds["control"] = _make(ControlBaseline, **kw).fit(real_ad).predict(query)
    scores = evaluate_predictions(real_ad, preds, **kw)
    metrics = scores["metrics"]
    prefix = out if out is not None else pred_path.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(f"{prefix}.csv", index_label="model")
    Path(f"{prefix}.json").write_text(json.dumps(metrics.to_dict(orient="index"), indent=2) + "\n")
    scores["per_perturbation"].to_csv(f"{prefix}_per_perturbation.csv", index=False)
    if not quiet:
        _print_metrics(metrics, "prediction")
        typer.echo(f"\nwrote {prefix}.json, {prefix}.csv, {prefix}_per_perturbation.csv")


@app.command(
    epilog=_examples(
        "sktx select --data demo --genes 200 --out genes.csv",
        "sktx select --data screen.h5ad --genes 500 --perturbation-key perturbation \\",
        "    --control-label control --out genes.csv",
    )
)
@_guard
def select(
    data: Annotated[str, typer.Option("--data", help="An .h5ad file, or `demo`.")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write (gene, category, score).")],
    genes: Annotated[int, typer.Option("--genes", min=1, help="Genes to select.")] = 500,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    seed: Seed = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Select informative genes (TFs, cell cycle, metabolic, targets, responsive, HVG)."""
    if data != DEMO:
        _existing_file(data, "--data")
    (GeneSelector,) = _require("sktx.selection", "GeneSelector")
    keys = _keys_for(data, perturbation_key, control_label, cell_type_key, quiet=quiet)
    adata = _load(data, keys, n_cells=None, seed=seed, n_genes=max(genes, 500))
    selector = _make(GeneSelector, n_genes=genes, random_state=seed, **asdict(keys)).fit(adata)
    table = selector.categories_
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    if not quiet:
        counts = table["category"].value_counts()
        typer.echo(", ".join(f"{c}: {n}" for c, n in counts.items()))
        typer.echo(f"{len(table)} genes -> {out}")


@app.command(
    epilog=_examples("sktx report runs/norman", "sktx report runs/norman --out /tmp/report")
)
@_guard
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by train/demo.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for report.html/.md [default: RUN_DIR].")
    ] = None,
    debug: Debug = False,
) -> None:
    """Re-render report.html and report.md from a run directory."""
    from sktx.report import write_report

    if not run_dir.is_dir():
        raise BadInput(f"RUN_DIR: {str(run_dir)!r} is not a directory")
    path = write_report(run_dir, out)
    typer.echo(f"wrote {path} and {path.with_suffix('.md')}")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sktx {version('sktx')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Predict single-cell responses to genetic perturbations (Perturb-seq)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sktx`` script (and ``python -m sktx``)."""
    app(args=argv, prog_name="sktx")
