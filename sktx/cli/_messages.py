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
_NAMES = "|".join(_FLAGS)
# `Estimator(perturbation_key=...)`
_CALL = re.compile(r"`\w+\((" + _NAMES + r")=\.\.\.\)`")
# `perturbation_key='gene'`, `perturbation_key=`, perturbation_key=...
_PARAM = re.compile(r"(`?)\b(" + _NAMES + r")=(?:'([^']*)'|\.\.\.|([\w.-]+))?(`?)")


def _flag(match: re.Match) -> str:
    open_, name, quoted, word, close = match.groups()
    value = quoted or word
    text = _FLAGS[name] + (f" {value}" if value else "")
    return f"`{text}`" if open_ or close else text


def cli_wording(message: str) -> str:
    """Name the command-line flag where a library message names a Python parameter.

    Examples
    --------
    >>> cli_wording("`obs['x']` not found; available columns: ['a']. Pass `perturbation_key=`.")
    "`obs['x']` not found; available columns: ['a']. Pass `--perturbation-key`."
    >>> cli_wording("Pass `PerturbationSplit(perturbation_key=...)`.")
    'Pass `--perturbation-key`.'
    >>> cli_wording("(e.g. `perturbation_key='target_gene'`)")
    '(e.g. `--perturbation-key target_gene`)'
    """
    message = _CALL.sub(lambda m: f"`{_FLAGS[m.group(1)]}`", message)
    return _PARAM.sub(_flag, message)


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
