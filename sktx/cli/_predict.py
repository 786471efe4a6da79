"""``sktx predict``: predicted cells for a query with a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sktx.cli._app import (
    BadInput,
    CellTypeKey,
    ControlLabel,
    Debug,
    PertKey,
    Quiet,
    _echo,
    _examples,
    _guard,
    app,
)
from sktx.cli._io import _MODEL_FILE, Keys, _load_model, _load_query
from sktx.cli._rundir import refuse_input_as_output


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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow --out to be an input file.")
    ] = False,
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
    refuse_input_as_output(out, {"--data": data, "--model": path}, overwrite=overwrite)
    estimator = _load_model(path)
    query = _load_query(data, keys)
    pred = estimator.predict(query)
    out.parent.mkdir(parents=True, exist_ok=True)
    pred.write_h5ad(out)
    _echo(quiet, f"predicted {pred.n_obs} cells x {pred.n_vars} genes -> {out}")
