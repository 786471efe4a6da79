"""The one ``gene_sets`` grammar: every sktx parameter that takes gene sets reads it here.

:func:`read_gene_sets` turns a specification into ``{name: [genes]}``;
:func:`load_gene_sets` is the :class:`~sktx.selection.GeneSelector` view of it
(fixed categories, built-in lists for the categories not given).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from sktx.genesets._builtin import BUILTIN_GENE_SETS, CATEGORIES
from sktx.genesets._io import read_gmt, read_list

__all__ = ["load_gene_sets", "read_gene_sets"]

_LIST_SUFFIXES = (".txt", ".grp", ".lst", ".tsv")
_GMT_SUFFIX = ".gmt"
_TERM_SEP = "::"


def _is_pathlike(item: object) -> bool:
    if isinstance(item, os.PathLike):
        return True
    if not isinstance(item, str):
        return False
    # Only the suffix decides: symbols may contain '/' (``OCT3/4``).
    return item.split(_TERM_SEP)[0].lower().endswith((*_LIST_SUFFIXES, _GMT_SUFFIX))


def _split_term(item: str | os.PathLike) -> tuple[str, Path, str]:
    """``"file.gmt::TERM"`` -> (text, path, term); ``term`` is ``""`` without ``::``."""
    text = os.fspath(item)
    base, _, term = text.partition(_TERM_SEP)
    path = Path(base)
    if term and path.suffix.lower() != _GMT_SUFFIX:
        raise ValueError(
            f"{text!r}: the '::TERM' suffix selects a term of a .gmt file; {str(path)!r} "
            "is not a .gmt file."
        )
    return text, path, term


def _gmt_term(path: Path, term: str) -> list[str]:
    terms = read_gmt(path)
    if term not in terms:
        close = [t for t in terms if term.lower() in t.lower()][:5]
        hint = f" Terms containing {term!r}: {close}." if close else ""
        raise ValueError(
            f"term {term!r} not found in {str(path)!r} ({len(terms)} terms, e.g. "
            f"{list(terms)[:3]}).{hint} Write `'path.gmt::TERM'` with the exact name, or "
            "the path alone for the union of all terms."
        )
    return terms[term]


def _path_sets(item: str | os.PathLike) -> dict[str, list[str]]:
    """A path as named sets: every GMT term, the one ``::TERM``, or ``{stem: list}``."""
    _, path, term = _split_term(item)
    if term:
        return {term: _gmt_term(path, term)}
    if path.suffix.lower() == _GMT_SUFFIX:
        return read_gmt(path)
    return {path.stem: read_list(path)}


def _path_genes(item: str | os.PathLike) -> list[str]:
    """A path as one gene list: a GMT file's union of terms, its ``::TERM``, or the list."""
    _, path, term = _split_term(item)
    if term:
        return _gmt_term(path, term)
    if path.suffix.lower() == _GMT_SUFFIX:
        genes: dict[str, None] = {}
        for members in read_gmt(path).values():
            genes.update(dict.fromkeys(members))
        return list(genes)
    return read_list(path)


def _source_genes(name: str, source) -> list[str]:
    """One named set of a dict spec: its source read as one de-duplicated gene list."""
    if isinstance(source, (str, os.PathLike)):
        genes = _path_genes(source)
    elif isinstance(source, Mapping):
        genes = [g for members in source.values() for g in members]
    elif isinstance(source, Iterable):
        genes = []
        for item in source:
            if _is_pathlike(item):
                genes.extend(_path_genes(item))
            elif isinstance(item, str):
                genes.append(item)
            else:
                raise TypeError(
                    f"gene set {name!r}: items must be gene symbols or file paths, got "
                    f"{type(item).__name__} {item!r}."
                )
    else:
        raise TypeError(
            f"gene set {name!r}: expected a path (.txt/.gmt), a list of symbols or "
            f"paths, or a dict of term -> genes; got {type(source).__name__}."
        )
    return list(dict.fromkeys(str(g) for g in genes))


def read_gene_sets(
    spec: bool | str | os.PathLike | Mapping | Iterable | None = None, *, param: str = "gene_sets"
) -> dict[str, list[str]]:
    """Read any ``gene_sets`` specification into ``{name: [genes]}``.

    The grammar shared by :class:`~sktx.regressor.PerturbationRegressor`
    (``gene_sets``), :class:`~sktx.baselines.LinearBaseline`
    (``prior_gene_sets``), :func:`sktx.graph.build_gene_graph` and
    :class:`~sktx.selection.GeneSelector` (through :func:`load_gene_sets`).

    Parameters
    ----------
    spec : None, False, str, path-like, dict or list, default=None
        - ``None``: the built-in curated lists (:data:`BUILTIN_GENE_SETS`),
          one set per category;
        - ``False``: no gene sets (``{}``);
        - a path to a ``.gmt`` file: every term, in file order;
        - ``"file.gmt::TERM"``: that term only, named ``TERM``;
        - a path to any other file (``.txt``, ``.tsv``, ...): a one-symbol-per-line
          list (first column, ``#`` comments) named after the file's stem;
        - a dict ``{name: source}``: one set per name; a source is a list of
          symbols and/or paths (in a list, a string is a path when it ends in
          ``.txt``, ``.grp``, ``.lst``, ``.tsv`` or ``.gmt``, optionally followed
          by ``::TERM``), a path (a ``.gmt`` file gives the union of its
          terms, ``"file.gmt::TERM"`` one term), or a dict ``{term: genes}``
          (their union);
        - a list of any of the above: read in order and merged (a later set
          with the same name replaces an earlier one).
    param : str, default="gene_sets"
        Name of the parameter ``spec`` came from, used in error messages.

    Returns
    -------
    dict of str to list of str
        Sets in the order given (file order within a file); genes de-duplicated,
        first occurrence kept, symbols as written (:func:`resolve_aliases` maps
        them to a dataset). Files are parsed once per process while they are
        unchanged (same modification time and size).

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    ValueError
        For an unknown GMT term (with close matches) or ``::TERM`` after a
        file that is not ``.gmt``.
    TypeError
        For a value of another type, naming the set.

    See Also
    --------
    load_gene_sets : The GeneSelector view (categories, built-in defaults).
    read_gmt, read_list : The file readers.

    Examples
    --------
    >>> read_gene_sets({"core": ["SOX2", "NANOG", "SOX2"]})
    {'core': ['SOX2', 'NANOG']}
    >>> read_gene_sets(False)
    {}
    >>> sorted(read_gene_sets(None)) == sorted(BUILTIN_GENE_SETS)
    True
    """
    if spec is False:
        return {}
    if spec is None:
        return {k: list(v) for k, v in BUILTIN_GENE_SETS.items()}
    if isinstance(spec, Mapping):
        return {str(name): _source_genes(str(name), source) for name, source in spec.items()}
    if isinstance(spec, (str, os.PathLike)):
        return _path_sets(spec)
    if isinstance(spec, Iterable):
        merged: dict[str, list[str]] = {}
        for item in spec:
            merged.update(read_gene_sets(item, param=param))
        return merged
    raise TypeError(
        f"`{param}` must be None, False, a dict, a path or a list of those; got "
        f"{type(spec).__name__}."
    )


def load_gene_sets(
    spec: Mapping[str, object] | None = None, *, categories: Iterable[str] | None = CATEGORIES
) -> dict[str, tuple[str, ...]]:
    """Build the category -> genes mapping used by :class:`~sktx.selection.GeneSelector`.

    Parameters
    ----------
    spec : dict, optional
        ``{category: source}``, read by :func:`read_gene_sets` (the dict form:
        a source is a path, ``"path.gmt::TERM"``, a list of symbols and/or
        paths, or a dict ``{term: genes}``). Categories not in ``spec`` keep
        their built-in list (:data:`BUILTIN_GENE_SETS`); ``None`` returns the
        built-ins. A plain string is always read as a path; pass symbols in a
        list.
    categories : iterable of str or None, default=("tf", "cell_cycle", "metabolic", "pluripotency")
        Allowed keys; ``None`` allows any key (e.g. for your own analyses).

    Returns
    -------
    dict of str to tuple of str
        Genes per category, de-duplicated, in file order. Symbols are returned
        as written; :func:`resolve_aliases` maps them to a dataset.

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    ValueError
        For an unknown category or GMT term.

    Examples
    --------
    >>> sets = load_gene_sets({"tf": ["SOX2", "GATA1"], "metabolic": []})
    >>> sets["tf"], sets["metabolic"], len(sets["cell_cycle"]) > 0
    (('SOX2', 'GATA1'), (), True)
    """
    allowed = None if categories is None else tuple(categories)
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"`gene_sets` must be a dict {{category: source}}, got {type(spec).__name__}; "
            "e.g. `gene_sets={'tf': 'human_tfs.txt'}`."
        )
    if allowed is not None:
        unknown = [k for k in spec if k not in allowed]
        if unknown:
            raise ValueError(
                f"unknown gene-set categories {unknown}; known categories: {list(allowed)}."
            )
    out = {k: v for k, v in BUILTIN_GENE_SETS.items() if allowed is None or k in allowed}
    out.update((k, tuple(v)) for k, v in read_gene_sets(spec).items())
    return out
