"""``sktx select``: the genes a model would use, with their category."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from sktx.cli._app import (
    CellTypeKey,
    ControlLabel,
    Debug,
    PertKey,
    Quiet,
    Seed,
    _examples,
    _guard,
    app,
)
from sktx.cli._estimator import _make, _require
from sktx.cli._io import DEMO, _existing_file, _keys_for, _load
from sktx.cli._rundir import refuse_input_as_output


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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow --out to be the --data file.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Select informative genes (TFs, cell cycle, metabolic, targets, responsive, HVG)."""
    if data != DEMO:
        _existing_file(data, "--data")
        refuse_input_as_output(out, {"--data": data}, overwrite=overwrite)
    (GeneSelector,) = _require("sktx.selection", "GeneSelector")
    keys = _keys_for(data, perturbation_key, control_label, cell_type_key, quiet=quiet)
    adata = _load(data, keys, n_cells=None, seed=seed, n_genes=max(genes, 500))
    selector = _make(GeneSelector, n_genes=genes, random_state=seed, **asdict(keys)).fit(adata)
    table = _readable(selector.categories_)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    if not quiet:
        counts = table["category"].value_counts()
        typer.echo(", ".join(f"{c}: {n}" for c, n in counts.items()))
        spilled = table["spilled_from"].dropna().value_counts()
        if len(spilled):
            typer.echo(
                "unused quota filled with HVGs: "
                + ", ".join(f"{n} of {c}" for c, n in spilled.items())
            )
        typer.echo(f"{len(table)} genes -> {out}")


def _readable(categories: pd.DataFrame) -> pd.DataFrame:
    """One meaning per column: ``category`` is why a gene was chosen; ``spilled_from`` names
    the category whose unused quota it filled (a row such as ``PTGS2,hvg,tf`` read as if
    PTGS2 were a TF), empty otherwise."""
    table = categories.copy()
    quota = table.pop("quota") if "quota" in table else None
    spilled = None if quota is None else quota.where(quota != table["category"])
    table.insert(2, "spilled_from", spilled)
    return table
