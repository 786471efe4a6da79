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
from sktx.cli._io import _MODEL_FILE, DEMO, _gene_set_paths, _keys_for
from sktx.cli._runner import TrainConfig, run_experiment


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
    run_dir = run_experiment(cfg, quiet=quiet, resume=resume).run_dir
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
    run_dir = run_experiment(cfg, quiet=quiet).run_dir
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
