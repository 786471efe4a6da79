"""``sktx predict``: predicted cells with a trained model, from a query or a perturbation list."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
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
from sktx.cli._io import _MODEL_FILE, Keys, _existing_file, _load_model, _load_query
from sktx.cli._rundir import refuse_input_as_output


class Output(StrEnum):
    log1p = "log1p"
    counts = "counts"


def _perturbation_list(text: str | None, csv: Path | None) -> tuple[list[str] | None, dict | None]:
    """``--perturbations A,B+C`` or ``--perturbations-csv`` (a column of labels, and counts)."""
    if text is not None and csv is not None:
        raise BadInput("--perturbations and --perturbations-csv: give one of them")
    if text is not None:
        labels = [p.strip() for p in text.split(",") if p.strip()]
        if not labels:
            raise BadInput(f"--perturbations: expected labels such as A,B+C, got {text!r}")
        return labels, None
    if csv is None:
        return None, None
    table = pd.read_csv(_existing_file(csv, "--perturbations-csv"))
    label_col = next((c for c in ("target_gene", "perturbation", "target") if c in table), None)
    label_col = label_col or table.columns[0]
    labels = table[label_col].astype(str).str.strip().tolist()
    count_col = next((c for c in ("n_cells", "cells", "count", "n") if c in table), None)
    if count_col is None:
        return labels, None
    counts = pd.to_numeric(table[count_col], errors="coerce")
    if counts.isna().any() or (counts < 1).any() or (counts % 1 != 0).any():
        raise BadInput(f"--perturbations-csv: column {count_col!r} must hold positive integers")
    return labels, dict(zip(labels, counts.astype(int), strict=True))


def _saved_keys(run: Path, pkey, ctrl, ctkey) -> Keys:
    saved = {}
    if (run / "config.json").exists():
        saved = json.loads((run / "config.json").read_text())
    return Keys(
        pkey or saved.get("perturbation_key", "target_gene"),
        ctrl or saved.get("control_label", "non-targeting"),
        ctkey or saved.get("cell_type_key"),
    )


def _trained_on(run: Path) -> list[str] | None:
    """The perturbations the run trained on (``data.json``), when the run recorded them."""
    try:
        return list(json.loads((run / "data.json").read_text())["train_perturbations"])
    except (OSError, ValueError, KeyError):
        return None


def _warn_not_controls(query, keys: Keys, quiet: bool) -> None:
    """A query is control cells relabelled; real perturbed cells would be perturbed twice."""
    if "control_cell" in query.obs:
        return
    labels = query.obs[keys.perturbation_key].astype(str)
    n_pert = int((labels != keys.control_label).sum())
    if n_pert:
        _echo(
            quiet,
            f"warning: the {n_pert} non-control cells of the query are predicted from their own "
            "expression, i.e. as if they were control cells (no `obs['control_cell']`: not "
            "built by make_query). To predict perturbations from control cells use "
            "--perturbations A,B+C or --perturbations-csv with --data holding the controls.",
        )


def _predict_file(estimator, query, output: Output, all_genes: bool, seed: int):
    if output is Output.log1p and not all_genes:
        return estimator.predict(query)
    from sktx._counts import predict_output

    return predict_output(
        estimator, query, output=output.value, all_genes=all_genes, random_state=seed
    )


@app.command(
    epilog=_examples(
        "sktx predict --model runs/norman --data screen.h5ad --perturbations SGK1,CEBPA+KLF1 \\",
        "    --n-cells 100 --out pred.h5ad",
        "sktx predict --model runs/norman --data screen.h5ad \\",
        "    --perturbations-csv pert_counts.csv --with-controls --output counts --out pred.h5ad",
        "sktx predict --model runs/norman --query runs/norman/query.h5ad --out pred.h5ad",
        "",
        "With --perturbations / --perturbations-csv the query is built from the control cells",
        "of --data. A CSV has a label column (target_gene, perturbation or the first) and",
        "optionally cell counts (n_cells). --query takes a ready query (control cells",
        "relabelled, e.g. the query.h5ad `sktx train` writes).",
    )
)
@_guard
def predict(
    model: Annotated[Path, typer.Option("--model", help="Run directory (or its model.sktx).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the predicted .h5ad.")],
    query: Annotated[
        str | None,
        typer.Option("--query", help="Ready query .h5ad (control cells relabelled)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Cells holding the controls to predict from (with --perturbations or "
            "--perturbations-csv); alone, a ready query like --query.",
        ),
    ] = None,
    perturbations: Annotated[
        str | None, typer.Option("--perturbations", help="Labels to predict, e.g. A,B+C.")
    ] = None,
    perturbations_csv: Annotated[
        Path | None,
        typer.Option("--perturbations-csv", help="CSV of labels (and n_cells) to predict."),
    ] = None,
    n_cells: Annotated[
        int | None,
        typer.Option(
            "--n-cells", min=1, help="Cells per perturbation [default: CSV counts, else controls]."
        ),
    ] = None,
    all_genes: Annotated[
        bool, typer.Option("--all-genes", help="Every gene of the input, not only the model's.")
    ] = False,
    with_controls: Annotated[
        bool, typer.Option("--with-controls", help="Also write the control cells.")
    ] = False,
    output: Annotated[
        Output, typer.Option("--output", help="log1p values or raw counts.")
    ] = Output.log1p,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the control cells drawn.")] = 0,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow --out to be an input file.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict perturbed cells with a trained model (from control cells)."""
    path = model / _MODEL_FILE if model.is_dir() else model
    if not path.exists():
        raise BadInput(f"--model: no fitted model at {str(path)!r}; train one with `sktx train`")
    labels, counts = _perturbation_list(perturbations, perturbations_csv)
    if query is not None and data is not None:
        raise BadInput("--query and --data: give one of them")
    if labels is None and (query or data) is None:
        raise BadInput("give --query FILE, or --data FILE with --perturbations/--perturbations-csv")
    if labels is not None and data is None:
        raise BadInput("--perturbations needs --data: the file holding the control cells")
    keys = _saved_keys(path.parent, perturbation_key, control_label, cell_type_key)
    inputs = {"--query": query, "--data": data, "--model": path}
    refuse_input_as_output(out, inputs, overwrite=overwrite)
    estimator = _load_model(path)
    cells = _load_query(query or data, keys)
    if labels is None:
        if n_cells is not None or with_controls:
            raise BadInput("--n-cells and --with-controls build a query: use --perturbations")
        _warn_not_controls(cells, keys, quiet)
        pred = _predict_file(estimator, cells, output, all_genes, seed)
    else:
        from sktx._perturbations import predict_perturbations

        # `--n-cells` overrides the CSV's counts: the same number for every label
        wanted = counts if n_cells is None and counts is not None else n_cells
        pred = predict_perturbations(
            estimator,
            cells,
            labels,
            n_cells=wanted,
            with_controls=with_controls,
            output=output.value,
            all_genes=all_genes,
            random_state=seed,
            **vars(keys),
        )
    # `sktx evaluate` warns when it scores a perturbation the model was trained on
    record = dict(pred.uns.get("sktx", {}))
    record["trained_perturbations"] = _trained_on(path.parent)
    pred.uns["sktx"] = {k: v for k, v in record.items() if v is not None}
    out.parent.mkdir(parents=True, exist_ok=True)
    pred.write_h5ad(out)
    _echo(quiet, f"predicted {pred.n_obs} cells x {pred.n_vars} genes ({output.value}) -> {out}")
