"""Docstring fragments for the parameters many sktx functions share (as scanpy's ``_docs``).

A docstring names a fragment on a line of its own, ``{doc_keys}``, indented like
the parameters around it; :func:`doc_params` puts the fragment there, indented
the same, when the module is imported. One text per shared parameter, so the
column names read the same in every estimator, metric and splitter.
"""

from __future__ import annotations

import re
import textwrap
from typing import TypeVar

__all__ = ["FRAGMENTS", "doc_params", "fill"]

T = TypeVar("T")

FRAGMENTS: dict[str, str] = {
    "doc_keys": """\
perturbation_key : str, default="target_gene"
    ``obs`` column naming each cell's perturbation (``"A+B"`` for combinations;
    labels are read in canonical form, see :func:`sktx.canonical_label`). Left
    at its default, the key :func:`sktx.datasets.load_h5ad` recorded in
    ``uns['sktx']`` is used, so the column names are given once.
control_label : str, default="non-targeting"
    Label of control cells in that column (its default is read the same way).""",
    "doc_cell_type_key": """\
cell_type_key : str, optional
    ``obs`` column with each cell's type (context); controls, effects and
    scores are taken per cell type. None: one context.""",
    "doc_cells": """\
cells : {"profile", "controls"}, default="profile"
    How perturbed query cells are built: every cell = the predicted profile
    (cell-eval's baseline convention), or the query's control cells carried to
    the predicted mean with zeros kept (as the regressor does; the fair
    comparison with it, which ``sktx train`` and the reports use).""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>doc_\w+)\}[ \t]*$", re.MULTILINE)


def fill(doc: str | None, fragments: dict[str, str] | None = None) -> str | None:
    """``doc`` with each ``{doc_name}`` line replaced by its fragment, indented alike.

    Examples
    --------
    >>> print(fill("Parameters\\n    ----------\\n    {doc_cell_type_key}"))
    Parameters
        ----------
        cell_type_key : str, optional
            ``obs`` column with each cell's type (context); controls, effects and
            scores are taken per cell type. None: one context.
    """
    if doc is None:
        return None
    fragments = FRAGMENTS if fragments is None else fragments

    def put(match: re.Match) -> str:
        name = match["name"]
        if name not in fragments:
            raise KeyError(f"no docstring fragment {name!r}; known: {sorted(fragments)}")
        return textwrap.indent(fragments[name], match["indent"])

    return _PLACEHOLDER.sub(put, doc)


def doc_params(obj: T) -> T:
    """Decorator: fill the fragments of a function's or class's docstring (see :func:`fill`).

    Examples
    --------
    >>> @doc_params
    ... def f(perturbation_key="target_gene", control_label="non-targeting"):
    ...     '''Parameters
    ...     ----------
    ...     {doc_keys}
    ...     '''
    >>> "control_label : str" in f.__doc__
    True
    """
    obj.__doc__ = fill(obj.__doc__)
    return obj
