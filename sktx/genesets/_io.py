"""Reading gene lists (plain text, GMT) and resolving old gene symbols."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from sktx.genesets._builtin import BUILTIN_GENE_SETS, CATEGORIES

__all__ = ["ALIASES", "load_gene_sets", "read_gmt", "read_list", "resolve_aliases"]

#: Old or informal symbol -> current HGNC symbol. A short table of the renames
#: that matter for the curated lists (Tirosh 2016 and Lambert 2018 predate them)
#: and of names biologists type (OCT4, PU.1). Not a full HGNC alias map.
ALIASES: dict[str, str] = {
    # pluripotency names in common use
    "OCT4": "POU5F1",
    "OCT3/4": "POU5F1",
    "OCT3": "POU5F1",
    "REX1": "ZFP42",
    "STELLA": "DPPA3",
    "CRIPTO": "TDGF1",
    # renamed since Tirosh et al. (2016)
    "MLF1IP": "CENPU",
    "FAM64A": "PIMREG",
    "HN1": "JPT1",
    # renamed since Lambert et al. (2018)
    "T": "TBXT",
    "ZUFSP": "ZUP1",
    "C11orf95": "ZFTA",
    # renamed in Norman et al. (2019) era data (perturbench `perturbation_raw`)
    "KIAA1804": "MAP3K21",
    # protein / informal names
    "PU.1": "SPI1",
    "P53": "TP53",
    "C-MYC": "MYC",
    "NRF2": "NFE2L2",
    "GLUT1": "SLC2A1",
    "KI67": "MKI67",
    # ATP synthase subunits renamed by HGNC in 2019
    "ATP5A1": "ATP5F1A",
    "ATP5B": "ATP5F1B",
    "ATP5O": "ATP5PO",
    # Excel-mangling renames (HGNC 2020)
    "SEPT7": "SEPTIN7",
    "MARCH1": "MARCHF1",
}

_LIST_SUFFIXES = (".txt", ".grp", ".lst", ".tsv")
_GMT_SUFFIX = ".gmt"
_TERM_SEP = "::"


def _reverse_aliases() -> dict[str, list[str]]:
    rev: dict[str, list[str]] = {}
    for old, new in ALIASES.items():
        rev.setdefault(new, []).append(old)
    return rev


def resolve_aliases(genes: Iterable[str], var_names: Iterable[str] | None = None) -> list[str]:
    """Map gene symbols to current HGNC symbols, or to the spelling the data uses.

    Parameters
    ----------
    genes : iterable of str
        Gene symbols, possibly outdated (``"OCT4"``, ``"MLF1IP"``).
    var_names : iterable of str, optional
        Genes of the data. When given, each symbol becomes whichever spelling
        of the same gene ``var_names`` contains (the symbol itself, its current
        name, or another alias of it); symbols of genes the data lack become
        their current name.

    Returns
    -------
    list of str
        One symbol per input, in order (duplicates are kept).

    See Also
    --------
    ALIASES : the alias table.

    Examples
    --------
    >>> resolve_aliases(["OCT4", "SOX2", "MLF1IP"])
    ['POU5F1', 'SOX2', 'CENPU']
    >>> resolve_aliases(["CENPU"], var_names=["MLF1IP", "GAPDH"])
    ['MLF1IP']
    """
    genes = [str(g) for g in genes]
    if var_names is None:
        return [ALIASES.get(g, g) for g in genes]
    present = set(var_names)
    rev = _reverse_aliases()
    out = []
    for g in genes:
        if g in present:
            out.append(g)
            continue
        current = ALIASES.get(g, g)
        spellings = [current, *rev.get(current, [])]
        out.append(next((s for s in spellings if s in present), current))
    return out


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"gene list file not found: {str(path)!r}. Check the path (relative paths are "
            f"resolved from {os.getcwd()!r}), or pass the genes as a list of symbols."
        )
    return path


def read_list(path: str | os.PathLike) -> list[str]:
    """Read a plain-text gene list: one symbol per line.

    Blank lines and lines starting with ``#`` are skipped; text after a tab or
    space on a line (e.g. a second column) is ignored. Duplicates are dropped,
    first occurrence kept.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tfs.txt"
    >>> _ = p.write_text("# my TFs\\nSOX2\\n\\nGATA1\\nSOX2\\n")
    >>> read_list(p)
    ['SOX2', 'GATA1']
    """
    path = _check_file(Path(path))
    genes: dict[str, None] = {}
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            genes[line.split()[0]] = None
    return list(genes)


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file (MSigDB / Enrichr format) into ``{term: genes}``.

    Each line is ``term <tab> description <tab> gene <tab> gene ...``. Empty
    gene fields (Enrichr writes trailing tabs) are dropped; a term that
    appears twice has its genes merged.

    Parameters
    ----------
    path : str or path-like
        The ``.gmt`` file.

    Returns
    -------
    dict of str to list of str
        Terms in file order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sets.gmt"
    >>> _ = p.write_text("GLYCOLYSIS\\tna\\tHK2\\tPKM\\nTCA\\tna\\tCS\\t\\n")
    >>> read_gmt(p)
    {'GLYCOLYSIS': ['HK2', 'PKM'], 'TCA': ['CS']}
    """
    path = _check_file(Path(path))
    terms: dict[str, dict[str, None]] = {}
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if not fields[0].strip() or fields[0].startswith("#"):
                continue
            if len(fields) < 2:
                raise ValueError(
                    f"{str(path)!r} line {lineno} is not GMT: expected "
                    "'term<TAB>description<TAB>gene...' (tab-separated)."
                )
            genes = terms.setdefault(fields[0], {})
            genes.update(dict.fromkeys(g.strip() for g in fields[2:] if g.strip()))
    return {term: list(genes) for term, genes in terms.items()}


def _is_pathlike(item: object) -> bool:
    if isinstance(item, os.PathLike):
        return True
    if not isinstance(item, str):
        return False
    # Only the suffix decides: symbols may contain '/' (``OCT3/4``).
    return item.split(_TERM_SEP)[0].lower().endswith((*_LIST_SUFFIXES, _GMT_SUFFIX))


def _read_path(item: str | os.PathLike) -> list[str]:
    text = os.fspath(item)
    base, _, term = text.partition(_TERM_SEP)
    path = Path(base)
    if path.suffix.lower() == _GMT_SUFFIX:
        terms = read_gmt(path)
        if not term:
            genes: dict[str, None] = {}
            for members in terms.values():
                genes.update(dict.fromkeys(members))
            return list(genes)
        if term not in terms:
            close = [t for t in terms if term.lower() in t.lower()][:5]
            hint = f" Terms containing {term!r}: {close}." if close else ""
            raise ValueError(
                f"term {term!r} not found in {str(path)!r} ({len(terms)} terms, e.g. "
                f"{list(terms)[:3]}).{hint} Write `'path.gmt::TERM'` with the exact name, or "
                "the path alone for the union of all terms."
            )
        return terms[term]
    if term:
        raise ValueError(
            f"{text!r}: the '::TERM' suffix selects a term of a .gmt file; {str(path)!r} "
            "is not a .gmt file."
        )
    return read_list(path)


def _read_source(category: str, source) -> tuple[str, ...]:
    if isinstance(source, (str, os.PathLike)):
        genes = _read_path(source)
    elif isinstance(source, Mapping):
        genes = [g for members in source.values() for g in members]
    elif isinstance(source, Iterable):
        genes = []
        for item in source:
            if _is_pathlike(item):
                genes.extend(_read_path(item))
            elif isinstance(item, str):
                genes.append(item)
            else:
                raise TypeError(
                    f"gene set {category!r}: items must be gene symbols or file paths, got "
                    f"{type(item).__name__} {item!r}."
                )
    else:
        raise TypeError(
            f"gene set {category!r}: expected a path (.txt/.gmt), a list of symbols or "
            f"paths, or a dict of term -> genes; got {type(source).__name__}."
        )
    return tuple(dict.fromkeys(str(g) for g in genes))


def load_gene_sets(
    spec: Mapping[str, object] | None = None, *, categories: Iterable[str] | None = CATEGORIES
) -> dict[str, tuple[str, ...]]:
    """Build the category -> genes mapping used by :class:`~sktx.selection.GeneSelector`.

    Parameters
    ----------
    spec : dict, optional
        ``{category: source}``. Categories not in ``spec`` keep their built-in
        list (:data:`BUILTIN_GENE_SETS`); ``None`` returns the built-ins. A
        source is one of:

        - a path to a plain-text list (``.txt``; one symbol per line, ``#``
          comments) or to a ``.gmt`` file (the union of all its terms);
        - ``"path.gmt::TERM"``: only that term of a GMT file;
        - a list/tuple of gene symbols, of paths, or of both (their union); in a
          list, a string is a path when it ends in ``.txt``, ``.grp``, ``.lst``,
          ``.tsv`` or ``.gmt`` (optionally followed by ``::TERM``);
        - a dict ``{term: genes}`` (its union).

        A plain string is always read as a path; pass symbols in a list.
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
    for category, source in spec.items():
        out[category] = _read_source(category, source)
    return out
