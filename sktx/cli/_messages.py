"""Messages in the command line's words: ``--perturbation-key``, not ``perturbation_key=``;
warnings as one ``warning: ...`` line, not a ``sklearn/base.py:1234: UserWarning`` dump."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cli_wording", "readable_warnings"]

# Python parameter spellings in library messages -> the command line's flags.
_FLAGS = {
    "perturbation_key": "--perturbation-key",
    "control_label": "--control-label",
    "cell_type_key": "--cell-type-key",
    "gene_sets": "--gene-sets",
}
_PARAM = re.compile(r"`?\b(" + "|".join(_FLAGS) + r")=(?:\.\.\.)?`?")
_CALL = re.compile(r"`\w+\((" + "|".join(_FLAGS) + r")=\.\.\.\)`")


def cli_wording(message: str) -> str:
    """Name the command-line flag where a library message names a Python parameter.

    Examples
    --------
    >>> cli_wording("`obs['x']` not found; available columns: ['a']. Pass `perturbation_key=`.")
    "`obs['x']` not found; available columns: ['a']. Pass `--perturbation-key`."
    >>> cli_wording("Pass `PerturbationSplit(perturbation_key=...)`.")
    'Pass `--perturbation-key`.'
    """
    message = _CALL.sub(lambda m: f"`{_FLAGS[m.group(1)]}`", message)
    return _PARAM.sub(lambda m: f"`{_FLAGS[m.group(1)]}`", message)


@contextmanager
def readable_warnings() -> Iterator[None]:
    """Show each warning as one ``warning: <first line>`` on stderr (CLI wording)."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        print(f"warning: {cli_wording(text[0]) if text else category.__name__}", file=sys.stderr)

    original = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
