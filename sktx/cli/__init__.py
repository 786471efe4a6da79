"""The ``sktx`` command line: train, predict, evaluate, select genes, run the demo.

Every command prints a one-line ``error: ...`` and exits with status 2 on bad
arguments or bad input (missing file, unknown ``obs`` column, no control
cells, ...); ``--debug`` shows the full traceback instead. Ctrl-C during
training of a single-network model (``crossfit=0``) saves ``checkpoint.sktx`` in
the run directory and exits with status 130; ``sktx train ... --resume``
continues from it (a cross-fitted model saves nothing: docs/cli.md).

Modules: ``_app`` (the Typer app, shared options, one-line errors), ``_io`` (reading,
subsampling and splitting data; model files), ``_estimator`` (build, fit, resume),
``_runner`` (one experiment, :func:`~sktx.cli._runner.run_experiment`), then one module
per command.
"""

from __future__ import annotations

# Importing a command module registers its commands; `sktx --help` lists them in this order.
# isort: off
from sktx.cli import _train  # noqa: F401  (train, demo)
from sktx.cli import _predict  # noqa: F401
from sktx.cli import _evaluate  # noqa: F401
from sktx.cli import _select  # noqa: F401
from sktx.cli import _report  # noqa: F401
from sktx.cli import _submit  # noqa: F401

# isort: on
from sktx.cli._app import app
from sktx.cli._estimator import _StopAfterCtrlC as _StopAfterCtrlC  # model files name it so

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sktx`` script (and ``python -m sktx``)."""
    app(args=argv, prog_name="sktx")
