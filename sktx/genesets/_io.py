"""Reading gene-list files (plain text, GMT), once per process, and resolving old symbols."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["ALIASES", "read_gmt", "read_list", "resolve_aliases"]

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

# Parsed files by (kind, absolute path, mtime, size): GO BP takes ~0.15 s to parse and
# several estimators (and every ProgressiveFit phase) ask for the same file.
_CACHE_SIZE = 16
_CACHE: OrderedDict[tuple, object] = OrderedDict()
_CACHE_LOCK = threading.Lock()


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


def _cached(kind: str, parse: Callable[[Path], object], path: Path):
    """``parse(path)``, parsed once per process while the file is unchanged."""
    path = _check_file(path)
    stat = path.stat()
    key = (kind, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = parse(path)
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def _clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _parse_list(path: Path) -> tuple[str, ...]:
    genes: dict[str, None] = {}
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            genes[line.split()[0]] = None
    return tuple(genes)


def _parse_gmt(path: Path) -> dict[str, tuple[str, ...]]:
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
    return {term: tuple(genes) for term, genes in terms.items()}


def read_list(path: str | os.PathLike) -> list[str]:
    """Read a plain-text gene list: one symbol per line.

    Blank lines and lines starting with ``#`` are skipped; text after a tab or
    space on a line (e.g. a second column) is ignored. Duplicates are dropped,
    first occurrence kept. A file is parsed once per process while its
    modification time and size stay the same.

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
    return list(_cached("list", _parse_list, Path(path)))


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file (MSigDB / Enrichr format) into ``{term: genes}``.

    Each line is ``term <tab> description <tab> gene <tab> gene ...``. Empty
    gene fields (Enrichr writes trailing tabs) are dropped; a term that
    appears twice has its genes merged. A file is parsed once per process
    while its modification time and size stay the same; each call returns
    fresh lists.

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
    return {term: list(genes) for term, genes in _cached("gmt", _parse_gmt, Path(path)).items()}
