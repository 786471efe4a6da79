"""Gene sets: one ``gene_sets`` grammar, short built-in lists, file readers, symbol aliases.

Every sktx parameter that takes gene sets (``gene_sets=``, ``prior_gene_sets=``)
is read by :func:`read_gene_sets`: ``None`` (the built-in lists), ``False``
(none), paths to ``.gmt``/``.txt`` files (``"file.gmt::TERM"`` for one term),
dicts of name -> genes or paths, and lists of these. The built-in lists
(:data:`BUILTIN_GENE_SETS`) are small and hand-curated;
:class:`~sktx.selection.GeneSelector` reads its ``{category: source}`` through
:func:`load_gene_sets`. Files are parsed once per process while unchanged.
"""

from sktx.genesets._builtin import BUILTIN_GENE_SETS, CATEGORIES
from sktx.genesets._io import ALIASES, read_gmt, read_list, resolve_aliases
from sktx.genesets._spec import load_gene_sets, read_gene_sets

__all__ = [
    "ALIASES",
    "BUILTIN_GENE_SETS",
    "CATEGORIES",
    "load_gene_sets",
    "read_gene_sets",
    "read_gmt",
    "read_list",
    "resolve_aliases",
]
