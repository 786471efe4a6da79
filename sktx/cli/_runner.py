"""One experiment, as ``sktx train`` and ``sktx demo`` run it (and benchmarks can).

load -> subsample -> split by perturbation -> fit -> baselines -> evaluate -> run directory.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from sktx._atomic import write_text
from sktx.cli._app import BadInput, Strategy, _echo
from sktx.cli._checks import check_demo_memory, check_run_data
from sktx.cli._estimator import _fit, _make, _phase_plan, _selector
from sktx.cli._io import (
    _CHECKPOINT_FILE,
    _DEMO_CELLS,
    _MODEL_FILE,
    DEMO,
    Keys,
    _existing_file,
    _load,
    _save_model,
    _split,
    _subsample,
    _summary,
)
from sktx.cli._rundir import RunLock, claim_run_dir, data_fingerprint, finish_before_exit
from sktx.pl._history import training_history as _history


@dataclass
class TrainConfig:
    """Options of one run; written to ``config.json`` (labels flattened into it).

    ``name``, ``model_name`` (and ``phases`` of a progressive run) are filled in by
    :func:`run_experiment`.
    """

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
    start: str = "shrunk"
    keys: Keys = field(default_factory=Keys)
    name: str = ""
    model_name: str = ""

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("keys"))
        return out


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns (everything is also saved in ``run_dir``).

    Attributes
    ----------
    run_dir : Path
        The run directory (``model.sktx``, ``config.json``, ``metrics.csv``, ``report.html``...).
    metrics : DataFrame
        Models (index) x metrics, averaged over the scored held-out perturbations.
    fit_seconds : float
        Wall time of fitting (or resuming) the model.
    total_seconds : float
        Wall time from the start to the end of evaluation (``data.json``'s total).
    estimator : object
        The fitted estimator (Pipeline or ProgressiveFit), as saved in ``model.sktx``.
    """

    run_dir: Path
    metrics: pd.DataFrame
    fit_seconds: float
    total_seconds: float
    estimator: Any


# Baselines ------------------------------------------------------------------------------------


#: How a run's baselines build predicted cells: as the model does (the query's control
#: cells carried to the predicted mean, zeros kept), so DES compares like with like.
BASELINE_CELLS = "controls"


def _baselines(cfg: TrainConfig) -> dict:
    """The baselines a run scores, in table order: sktx.baselines.BASELINES, the one list."""
    try:
        from sktx.baselines import BASELINES
    except ImportError:
        return {}
    keys = asdict(cfg.keys)
    # fair by default: cells built as the model builds them, the model's gene sets as prior
    sets = list(cfg.gene_sets) if cfg.gene_sets else None
    prior = {"gene_sets": sets, "prior_gene_sets": sets} if sets else {}
    return {
        label: _make(factory, random_state=cfg.seed, cells=BASELINE_CELLS, **prior, **keys)
        for label, factory in BASELINES.items()
    }


# Evaluation -----------------------------------------------------------------------------------

_UNKNOWN = re.compile(r"no embedding for target gene\(s\) (\[[^\]]*\])")


def _predict_each(estimator, query):
    """Predict the query (a PerturbationData); perturbations the model rejects are dropped.

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
    labels = query.labels
    for label in sorted(set(labels.tolist())):
        try:
            preds.append(run(query[labels == label]))
        except ValueError as exc:
            failed[label] = str(exc).strip().splitlines()[0]
    if not preds:
        raise BadInput(f"the model could predict none of the held-out perturbations: {failed}")
    return ad.concat(preds, merge="same"), failed, sorted(unknown)


def _evaluate(cfg: TrainConfig, estimator, train, test, quiet: bool) -> tuple[dict, list[str]]:
    """Predict the held-out perturbations with the model and each baseline and score them.

    ``train`` and ``test`` are cut from the run's one PerturbationData: the baselines'
    gene panels and the scored truth are views of it, never re-checked.
    """
    from sktx.model_selection import make_query
    from sktx.report import evaluate_predictions

    keys = asdict(cfg.keys)
    query = make_query(test, random_state=cfg.seed, **keys)
    pred, failed, unknown = _predict_each(estimator, query)
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
        query = query[~np.isin(query.labels, list(failed))]
        test = test[~np.isin(test.labels, list(failed))]
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
            base.fit(train.select_genes(genes))
            preds[label] = base.predict(query.select_genes(genes))
            seconds = time.perf_counter() - t0
            _echo(quiet, f"  baseline {label:<14} fitted and predicted in {seconds:.1f} s")
    scores = evaluate_predictions(test, preds, **keys)
    # the 2026 table beside it whenever the data hold raw counts (cell-eval2)
    from sktx.report._vcc2026 import vcc2026_scores

    # cell-eval2's DE engine (pdex) draws tqdm bars on stderr that cannot be switched off
    quiet_ctx = contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()
    with quiet_ctx:
        scores["vcc2026"], note = vcc2026_scores(test, query, preds, keys, cfg.seed)
    notes += [note] if note else []
    scores["scored_perturbations"] = sorted(set(test.labels[~test.is_control].tolist()))
    return scores, notes


# The run --------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _plan(cfg: TrainConfig, n_measured: int) -> str:
    """What will run, as it will run: gene counts after clipping to the measured genes."""
    genes = min(cfg.genes, n_measured)
    clipped = f" (--genes {cfg.genes} > {n_measured} measured)" if genes < cfg.genes else ""
    if cfg.strategy != Strategy.progressive.value:
        return f"standard, {_plural(genes, 'gene')}{clipped}, {_plural(cfg.epochs, 'epoch')}"
    phases = cfg.phases or [genes]
    return (
        f"progressive, {len(phases)} phases of {', '.join(map(str, phases))} genes{clipped}, "
        f"{_plural(cfg.epochs, 'epoch')} per phase"
    )


def _write_cells(out: Path, test, cfg: TrainConfig) -> None:
    """``heldout.h5ad`` (the real held-out cells and the controls), ``query.h5ad``
    (those controls relabelled, what the run predicted) and ``heldout_perturbations.csv``
    (``target_gene,n_cells``) beside the model, so ``sktx predict`` / ``sktx evaluate``
    need no Python."""
    from sktx.model_selection import make_query

    keys = {k: v for k, v in asdict(cfg.keys).items() if v is not None}
    for name, data in (
        ("heldout.h5ad", test),
        ("query.h5ad", make_query(test, random_state=cfg.seed, **asdict(cfg.keys))),
    ):
        adata = data.to_adata()
        adata.uns["sktx"] = {**keys, "x_is_log1p": True}
        adata.write_h5ad(out / name)
    # the held-out labels and their cell counts, for `sktx predict --perturbations-csv`
    held = pd.Series(test.labels[~test.is_control]).value_counts().sort_index()
    frame = pd.DataFrame({"target_gene": held.index, "n_cells": held.to_numpy()})
    frame.to_csv(out / "heldout_perturbations.csv", index=False)


def run_experiment(
    cfg: TrainConfig, *, quiet: bool = True, resume: bool = False, overwrite: bool = False
) -> ExperimentResult:
    """Train with held-out perturbations, score the model and baselines, write a run directory.

    The work of ``sktx train`` and ``sktx demo``: read ``cfg.data`` (an .h5ad file or
    ``"demo"``), subsample to ``cfg.cells``, hold out ``cfg.holdout`` of the perturbations,
    fit gene selection + model, predict the held-out perturbations with the model and each
    baseline, score them and write ``cfg.out`` (``config.json``, ``model.sktx``,
    ``metrics.csv``/``.json``, ``per_perturbation.csv``, ``report.html``/``.md``, ...).

    Parameters
    ----------
    cfg : TrainConfig
        The run's options. ``cfg.name``, ``cfg.model_name`` and, for a progressive run,
        ``cfg.phases`` are filled in.
    quiet : bool, default=True
        No progress lines, bars or notes on stdout.
    resume : bool, default=False
        Continue from ``checkpoint.sktx`` in ``cfg.out`` (left by Ctrl-C); refused when the
        checkpoint was trained on other data or options.
    overwrite : bool, default=False
        Replace a run already in ``cfg.out`` (its files are removed first); without it an
        existing run is refused. The directory is locked while the run writes it.

    Returns
    -------
    ExperimentResult
        Run directory, metrics table, timings and the fitted estimator.

    Raises
    ------
    BadInput, ValueError, OSError
        Bad options or input data (the command line prints them as one line).
    typer.Exit
        With status 130 when training was interrupted (Ctrl-C, SIGTERM).

    Examples
    --------
    >>> import tempfile
    >>> from sktx.cli._runner import TrainConfig, run_experiment
    >>> out = tempfile.mkdtemp()
    >>> cfg = TrainConfig(data="demo", out=out, genes=40, cells=300, epochs=1)
    >>> result = run_experiment(cfg)  # doctest: +SKIP
    >>> list(result.metrics.index)  # doctest: +SKIP
    ['PerturbationRegressor', 'control', 'mean', 'additive', 'additive_joint', 'linear']
    """
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if cfg.data != DEMO:
        _existing_file(cfg.data, "--data")
    if resume and not (out / _CHECKPOINT_FILE).exists():
        raise BadInput(f"--resume: no {_CHECKPOINT_FILE} in {str(out)!r}; nothing to resume")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        claim_run_dir(out, overwrite=overwrite, resume=resume)
        return _run(cfg, out, t_start, quiet=quiet, resume=resume)


def _run(cfg: TrainConfig, out: Path, t_start: float, *, quiet: bool, resume: bool):
    """The body of :func:`run_experiment`, with the run directory locked."""
    from sktx.data import prepare
    from sktx.report import RunRecord, write_report

    cfg.name = cfg.name or out.resolve().name
    cfg.model_name = "ProgressiveFit" if cfg.strategy == "progressive" else "PerturbationRegressor"
    if cfg.strategy == Strategy.progressive.value:
        cfg.phases = _phase_plan(cfg)
    source = "simulated (sktx.datasets.make_perturbseq)" if cfg.data == DEMO else str(cfg.data)
    if cfg.data == DEMO:
        check_demo_memory(max(cfg.genes, 50), cfg.cells or _DEMO_CELLS)
    _echo(quiet, f"loading {source} ...")
    adata = _load(
        cfg.data,
        cfg.keys,
        n_cells=cfg.cells if cfg.data == DEMO else None,
        n_genes=max(cfg.genes, 50),
        seed=cfg.seed,
    )
    n_read = adata.n_obs
    adata = _subsample(adata, cfg.cells, cfg.keys.perturbation_key, cfg.seed)
    if adata.n_obs < n_read:
        _echo(
            quiet,
            f"subsampling {n_read} -> {adata.n_obs} cells (--cells {cfg.cells}, stratified by "
            "perturbation; --cells all keeps every cell)",
        )
    # The run's one check and normalisation: split, fit, baselines and scoring share it.
    data = prepare(adata, **asdict(cfg.keys))
    check_run_data(data)
    meta = {"config": cfg.as_json(), "data": data_fingerprint(data)}
    if cfg.phases:  # the plan printed and saved is what runs: phases within the measured genes
        cfg.phases = sorted({min(p, data.n_vars) for p in cfg.phases})
    train, test = _split(data, cfg.keys, cfg.holdout, cfg.seed)
    summary = _summary(data, train, test, cfg.keys, source)
    summary["baseline cells"] = f"{BASELINE_CELLS} (built as the model builds them)"
    heldout = summary["heldout_perturbations"]
    _echo(
        quiet,
        f"{summary['cells']} cells x {summary['genes measured']} genes, "
        f"{summary['perturbations']} perturbations; holding out {len(heldout)}: "
        + ", ".join(heldout[:8])
        + (" ..." if len(heldout) > 8 else ""),
    )
    write_text(out / "config.json", json.dumps(cfg.as_json(), indent=2) + "\n")
    _echo(quiet, f"training {cfg.model_name} ({_plan(cfg, data.n_vars)}) ...")
    t_fit = time.perf_counter()
    estimator = _fit(cfg, train, out, quiet=quiet, resume=resume, meta=meta)
    fit_seconds = time.perf_counter() - t_fit
    with finish_before_exit(f"the model {out / _MODEL_FILE}") as hits:
        _save_model(estimator, out / _MODEL_FILE, meta=meta)
        # the checkpoint goes only once the model is safely in place
        (out / _CHECKPOINT_FILE).unlink(missing_ok=True)
    if hits:
        typer.echo(f"interrupted; the model is saved in {out / _MODEL_FILE}", err=True)
        raise typer.Exit(130)
    _write_cells(out, test, cfg)
    sel = _selector(estimator)
    categories = getattr(sel, "categories_", None)
    if categories is not None:
        summary["genes_per_category"] = categories["category"].value_counts().to_dict()
        summary["genes selected"] = len(categories)
    _echo(quiet, f"trained in {fit_seconds:.1f} s; evaluating on held-out perturbations ...")
    scores, notes = _evaluate(cfg, estimator, train, test, quiet)
    vcc2026 = scores.pop("vcc2026", None)
    summary["genes scored"] = len(scores.pop("genes"))
    scored = scores.pop("scored_perturbations")
    if len(scored) < len(heldout):
        summary["scored perturbations"] = scored
    total_seconds = time.perf_counter() - t_start
    summary["fit wall time (s)"] = round(fit_seconds, 1)
    summary["total wall time (s)"] = round(total_seconds, 1)
    record = RunRecord(
        config=cfg.as_json(),
        data=summary,
        history=_history(estimator),
        categories=categories,
        notes=notes,
        **scores,
    )
    record.save(out)
    if vcc2026 is not None:
        vcc2026.to_csv(out / "metrics_vcc2026.csv", index=False)
    write_report(out)
    return ExperimentResult(
        run_dir=out,
        metrics=scores["metrics"],
        fit_seconds=fit_seconds,
        total_seconds=total_seconds,
        estimator=estimator,
    )
