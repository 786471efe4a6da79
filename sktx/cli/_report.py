"""``sktx report``: re-render the report of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sktx.cli._app import BadInput, Debug, _examples, _guard, app

# What RunRecord.save writes; a report needs at least one of them.
_RUN_RECORD = ("metrics.csv", "config.json", "data.json")


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
    if not any((run_dir / name).is_file() for name in _RUN_RECORD):
        raise BadInput(
            f"RUN_DIR: {str(run_dir)!r} holds no sktx run (none of {', '.join(_RUN_RECORD)}); "
            "pass a directory written by `sktx train` or `sktx demo`"
        )
    path = write_report(run_dir, out)
    typer.echo(f"wrote {path} and {path.with_suffix('.md')}")
