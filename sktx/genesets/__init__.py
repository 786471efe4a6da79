"""Gene sets: short built-in lists, readers for your own lists, symbol aliases.

The built-in lists (:data:`BUILTIN_GENE_SETS`) are small and hand-curated;
pass comprehensive lists to :class:`~sktx.selection.GeneSelector` through
``gene_sets=`` (paths to ``.txt``/``.gmt`` files or lists of symbols), see
:func:`load_gene_sets`.
"""

from sktx.genesets._builtin import BUILTIN_GENE_SETS, CATEGORIES
from sktx.genesets._io import ALIASES, load_gene_sets, read_gmt, read_list, resolve_aliases

__all__ = [
    "ALIASES",
    "BUILTIN_GENE_SETS",
    "CATEGORIES",
    "load_gene_sets",
    "read_gmt",
    "read_list",
    "resolve_aliases",
]
