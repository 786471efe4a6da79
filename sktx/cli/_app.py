"""The Typer app, its one-line error handling and the options several commands share."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from typer.core import TyperGroup


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
        from sktx.cli._messages import cli_wording, readable_warnings

        debug = kwargs.get("debug", False) or os.environ.get("SKTX_DEBUG") == "1"
        try:
            if debug:
                return func(*args, **kwargs)
            with readable_warnings():
                return func(*args, **kwargs)
        except (typer.Exit, typer.TyperException):
            raise
        except (BadInput, ValueError, OSError) as exc:
            # ValueError covers DataContractError and parameter errors of the estimators;
            # anything else is a bug and keeps its traceback.
            if debug:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            message = cli_wording(message)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _echo(quiet: bool, message: str = "") -> None:
    if not quiet:
        typer.echo(message)


def _print_metrics(metrics: pd.DataFrame, model_name: str | None = None) -> None:
    # The metric columns and their arrows come from sktx.report, not from the CLI.
    from sktx.report._html import metrics_table_md

    typer.echo(metrics_table_md(metrics, model_name))


def _examples(*lines: str) -> str:
    # "\b" keeps click from re-wrapping the block.
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" if line else "" for line in lines)


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
