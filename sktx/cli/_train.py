"""``sktx train`` and ``sktx demo``: one experiment (see :mod:`sktx.cli._runner`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from sktx.cli._app import (
    BadInput,
    CellTypeKey,
    ControlLabel,
    Debug,
    GeneSets,
    PertKey,
    Quiet,
    Seed,
    Strategy,
    _examples,
    _guard,
    _print_metrics,
    app,
)
from sktx.cli._io import _CHECKPOINT_FILE, _MODEL_FILE, DEMO, Keys, _gene_set_paths, _keys_for
from sktx.cli._rundir import ADDED_LATER, RESUME_FIXED
from sktx.cli._runner import TrainConfig, run_experiment

# Options --resume takes from the checkpoint unless given (--epochs may extend the run).
_RESUMED = (*RESUME_FIXED, "data", "epochs", "device", "baselines")


def _check_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; refuse what cannot run."""
    import torch

    name = device.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise BadInput(f"--device: choose auto, cpu or cuda (cuda:N for one GPU), got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "sees no GPU"
            raise BadInput(
                f"--device {device}: this torch ({torch.__version__}) {why}; use --device cpu "
                "or --device auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(
                f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return str(dev)


def _given(ctx: typer.Context) -> set[str]:
    """Options the user typed (or set in the environment), not defaults."""
    # by name: typer ships its own copy of click, whose ParameterSource is another enum
    typed = ("COMMANDLINE", "ENVIRONMENT")
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", None) in typed
    }


def _saved_config(out: Path) -> dict:
    """The configuration stored with ``out``'s checkpoint (what --resume continues)."""
    from sktx._persist import ModelFileError, read_manifest

    ckpt = out / _CHECKPOINT_FILE
    if not ckpt.exists():
        old = (
            " (a checkpoint.pkl of an older sktx is not read)"
            if (out / "checkpoint.pkl").exists()
            else ""
        )
        raise BadInput(f"--resume: no {_CHECKPOINT_FILE} in {str(out)!r}{old}; nothing to resume")
    try:
        saved = (read_manifest(ckpt).get("meta") or {}).get("config")
    except ModelFileError as exc:
        raise BadInput(f"{exc}; delete it and train again") from None
    if not saved:
        raise BadInput(
            f"--resume: {str(ckpt)!r} records no options; start a new run with --overwrite"
        )
    return saved


def _resumed(cfg: TrainConfig, saved: dict, given: set[str]) -> TrainConfig:
    """``cfg`` with the checkpoint's options where the user gave none; conflicts refused."""
    saved = {**ADDED_LATER, **saved}  # options older checkpoints ran with by default
    now = cfg.as_json()
    conflicts = [k for k in RESUME_FIXED if k in given and now.get(k) != saved.get(k)]
    if conflicts:
        what = ", ".join(
            f"--{k.replace('_', '-')} {now[k]!r} (checkpoint: {saved.get(k)!r})" for k in conflicts
        )
        raise BadInput(
            f"--resume: {what}; omit them (--resume reads the checkpoint's options) or start "
            "a new run with --overwrite"
        )
    for k in _RESUMED:
        if k not in given and k in saved and k not in Keys.__dataclass_fields__:
            setattr(cfg, k, saved[k])
    keys = {
        k: saved[k] if k not in given and k in saved else getattr(cfg.keys, k)
        for k in Keys.__dataclass_fields__
    }
    cfg.keys = Keys(**keys)
    return cfg


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


def _parse_cells(cells: str) -> int | None:
    if cells.strip().lower() == "all":
        return None
    try:
        value = int(cells.replace(",", "").replace("_", ""))
    except ValueError:
        value = 0
    if value < 2:
        raise BadInput(f"--cells: expected a number of cells (at least 2) or `all`, got {cells!r}")
    return value


@app.command(
    epilog=_examples(
        "sktx train --data demo --genes 500 --epochs 5 --out runs/sim",
        "sktx train --data ../shared/data/norman2019_mcfaline2023_devel.h5ad \\",
        "    --perturbation-key perturbation --control-label control \\",
        "    --cell-type-key cell_type --gene-sets ../shared/genesets/go_bp_2021.gmt \\",
        "    --genes 500 --epochs 20 --out runs/norman",
        "sktx train --data screen.h5ad --strategy progressive \\",
        "    --phases 100,1200,2500,5000 --genes 5000 --out runs/prog",
        "sktx train --out runs/norman --resume   # after Ctrl-C: the checkpoint's options",
    )
)
@_guard
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="An .h5ad file, or `demo` for the simulator (required)."),
    ] = None,
    strategy: Annotated[
        Strategy, typer.Option("--strategy", help="One fit, or phases over growing gene sets.")
    ] = Strategy.standard,
    genes: Annotated[int, typer.Option("--genes", min=1, help="Genes to select and model.")] = 3000,
    cells: Annotated[
        str,
        typer.Option(
            "--cells",
            help="Subsample to this many cells (stratified by perturbation), or `all`.",
        ),
    ] = "10000",
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
    device: Annotated[
        str, typer.Option("--device", help="auto (cuda if available), cpu, cuda or cuda:N.")
    ] = "cpu",
    seed: Seed = 0,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Also score the baselines.")
    ] = True,
    gene_sets: GeneSets = None,
    start: Annotated[
        str,
        typer.Option(
            "--start",
            help="How an unseen target starts: shrunk (best 2025 MAE) or knn (its most similar "
            "fitted targets' effects, unshrunk: the 2026 metrics). See docs/model.md.",
        ),
    ] = "shrunk",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from checkpoint.sktx in --out (after Ctrl-C) with its options.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a finished run already in --out.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a model with held-out perturbations; save model, config, metrics and report."""
    if precision not in ("auto", "32", "bf16", "16"):
        raise BadInput(f"--precision: choose auto, 32, bf16 or 16, got {precision!r}")
    if start not in ("shrunk", "knn"):
        raise BadInput(f"--start: choose shrunk or knn, got {start!r}")
    saved = _saved_config(out) if resume else None
    if data is None:
        if saved is None:
            raise BadInput("--data: required (an .h5ad file, or `demo` for the simulator)")
        data = saved["data"]
    cfg = TrainConfig(
        data=data,
        out=str(out),
        strategy=strategy.value,
        genes=genes,
        cells=_parse_cells(cells),
        epochs=epochs,
        phases=_parse_phases(phases),
        holdout=holdout,
        precision=precision,
        checkpointing=checkpointing,
        device=device,
        seed=seed,
        baselines=baselines,
        gene_sets=_gene_set_paths(gene_sets),
        start=start,
        keys=_keys_for(data, perturbation_key, control_label, cell_type_key, quiet=quiet),
    )
    if saved is not None:
        cfg = _resumed(cfg, saved, _given(ctx))
    cfg.device = _check_device(cfg.device)
    run_dir = run_experiment(cfg, quiet=quiet, resume=resume, overwrite=overwrite).run_dir
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
    # the demo's directory is scratch: a new demo replaces the last one's files
    run_dir = run_experiment(cfg, quiet=quiet, overwrite=True).run_dir
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
