"""``sktx submit``: a Virtual Cell Challenge 2026 submission file from a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sktx.cli._app import BadInput, Debug, Quiet, _echo, _examples, _guard, app
from sktx.cli._io import _MODEL_FILE, _existing_file, _load_model


def _model(model: Path):
    """The fitted model of a run directory (or its model file), loaded as ``sktx predict`` does."""
    path = model / _MODEL_FILE if model.is_dir() else model
    if not path.exists():
        raise BadInput(f"--model: no fitted model at {str(path)!r}; train one with `sktx train`")
    return _load_model(path)


def _perturbations(value: str):
    """A ``target_gene,n_cells`` CSV path, or targets separated by commas."""
    if Path(value).is_file():
        return Path(value)
    targets = [t.strip() for t in value.split(",") if t.strip()]
    if not targets:
        raise BadInput("--perturbations: give a CSV file or targets separated by commas")
    return targets


@app.command(
    epilog=_examples(
        "sktx submit --model runs/h1 --controls controls.h5ad \\",
        "    --perturbations pert_counts.csv --genes gene_names.csv --out submission.h5ad",
        "",
        "sktx submit --model runs/h1 --controls controls.h5ad --context-key cell_line \\",
        "    --perturbations SRC,TET1 --n-cells 400 --genes gene_names.csv --out sub.h5ad",
        "",
        "Raw integer counts on the gene list's axis, obs target_gene (+ context),",
        "checked with cell-eval2's own input checks before the file is written.",
    )
)
@_guard
def submit(
    model: Annotated[Path, typer.Option("--model", help="Run directory (or its model file).")],
    controls: Annotated[
        str, typer.Option("--controls", help="Control cells (.h5ad, raw counts) of each context.")
    ],
    perturbations: Annotated[
        str,
        typer.Option(
            "--perturbations",
            help="A target_gene,n_cells CSV, or targets separated by commas.",
        ),
    ],
    genes: Annotated[
        str, typer.Option("--genes", help="gene_names.csv: the reference gene axis, in order.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the submission .h5ad.")],
    context_key: Annotated[
        str | None,
        typer.Option("--context-key", help="obs column of --controls naming the context."),
    ] = None,
    n_cells: Annotated[
        int, typer.Option("--n-cells", help="Cells per perturbation the CSV does not give.")
    ] = 400,
    include_controls: Annotated[
        bool,
        typer.Option(
            "--include-controls",
            help="Append the control cells (the platform appends its own; "
            "local scoring needs them).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the query draw and the counts.")] = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write a 2026 Virtual Cell Challenge submission (raw counts) from a trained model."""
    import anndata as ad

    from sktx.submission import write_submission

    estimator = _model(model)
    path = _existing_file(controls, "--controls")
    try:
        ctrl = ad.read_h5ad(path)
    except OSError as exc:
        raise BadInput(f"--controls: cannot read {str(path)!r} as .h5ad ({exc})") from None
    genes_path = _existing_file(genes, "--genes")
    sub = write_submission(
        estimator,
        ctrl,
        _perturbations(perturbations),
        genes_path,
        out,
        context_key=context_key,
        n_cells=n_cells,
        random_state=seed,
        include_controls=include_controls,
    )
    _echo(
        quiet,
        f"wrote {sub.n_obs} cells x {sub.n_vars} genes (raw counts, validated with cell-eval2) "
        f"-> {out}",
    )
