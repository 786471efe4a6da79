"""Short, hand-curated gene lists used when the user passes none.

The lists are deliberately small: they name well-established genes of each
category so that a default :class:`~sktx.selection.GeneSelector` and the
simulator (``make_perturbseq(gene_names="symbols")``) have meaningful symbols.
For real analyses pass comprehensive lists (``gene_sets=``), e.g. the 1,639
human TFs of Lambert et al. (2018) or the Tirosh et al. (2016) cell-cycle genes.

All symbols are current HGNC symbols (checked 2024); older spellings are
mapped by :data:`sktx.genesets.ALIASES`.
"""

from __future__ import annotations

__all__ = ["BUILTIN_GENE_SETS", "CATEGORIES"]

# Transcription factors: sequence-specific DNA-binding proteins, all in the
# census of Lambert et al. (2018) "The Human Transcription Factors", Cell 172:650.
# Chosen to cover pluripotency (Takahashi & Yamanaka 2006), haematopoiesis /
# erythroid-myeloid fate (Orkin & Zon 2008, Cell 132:631 - relevant to K562
# screens such as Norman et al. 2019), immediate-early genes, stress and
# signalling-responsive TFs, and ubiquitous architectural TFs.
_TF = (
    # pluripotency / reprogramming
    "POU5F1", "SOX2", "NANOG", "KLF4", "MYC", "MAX",
    # haematopoietic and erythroid/myeloid lineage
    "GATA1", "GATA2", "KLF1", "TAL1", "RUNX1", "SPI1", "CEBPA", "CEBPB", "CEBPE",
    "MYB", "IKZF1", "FLI1", "ERG", "GFI1B", "NFE2",
    # immediate-early / AP-1 / stimulus-responsive
    "JUN", "JUNB", "FOS", "FOSB", "EGR1", "ATF3", "NR4A1", "SRF", "ELK1",
    # stress, signalling and inflammation
    "TP53", "ATF4", "XBP1", "HIF1A", "NFE2L2", "NFKB1", "RELA", "STAT1", "STAT3",
    "IRF1", "CREB1", "SMAD3", "TCF7L2",
    # architectural / ubiquitous
    "CTCF", "YY1", "REST",
)  # fmt: skip

# Cell cycle: S-phase and G2/M markers of Tirosh et al. (2016) Science 352:189
# and the periodic genes of Whitfield et al. (2002) Mol Biol Cell 13:1977
# (cyclins, CDKs, CDK inhibitors, licensing factors, mitotic kinases).
_CELL_CYCLE = (
    # G1/S, licensing and replication (Whitfield 2002 G1/S cluster; Tirosh S)
    "CCND1", "CCNE1", "CCNE2", "CDK2", "CDK4", "CDK6", "E2F1", "CDC6", "CDT1",
    "MCM2", "MCM3", "MCM4", "MCM5", "MCM6", "MCM7", "PCNA", "CDC45", "GINS2",
    "RRM2", "TYMS", "UHRF1", "FEN1",
    # G2/M and mitosis (Whitfield 2002 G2, G2/M clusters; Tirosh G2M)
    "CCNA2", "CCNB1", "CCNB2", "CDK1", "CDC20", "CDC25C", "PLK1", "AURKA",
    "AURKB", "BUB1", "BIRC5", "MKI67", "TOP2A", "CENPF", "UBE2C", "TPX2",
    # CDK inhibitors (checkpoint control)
    "CDKN1A", "CDKN1B",
)  # fmt: skip

# Central carbon metabolism: glycolysis, TCA cycle and oxidative
# phosphorylation, as in KEGG hsa00010 / hsa00020 / hsa00190 and the MSigDB
# Hallmark sets GLYCOLYSIS and OXIDATIVE_PHOSPHORYLATION (Liberzon et al. 2015,
# Cell Syst 1:417). One or two rate-limiting / abundant enzymes per step.
_METABOLIC = (
    # glycolysis
    "SLC2A1", "HK1", "HK2", "GPI", "PFKL", "PFKP", "ALDOA", "TPI1", "GAPDH",
    "PGK1", "PGAM1", "ENO1", "PKM", "LDHA", "LDHB",
    # pyruvate entry and TCA cycle
    "PDHA1", "CS", "ACO2", "IDH2", "IDH3A", "OGDH", "SUCLG1", "SDHA", "SDHB",
    "FH", "MDH2",
    # oxidative phosphorylation (complexes I-V and cytochrome c)
    "NDUFS1", "NDUFA4", "UQCRC1", "CYCS", "COX4I1", "ATP5F1A",
)  # fmt: skip

# Pluripotency: markers used by the International Stem Cell Initiative
# (Adewumi et al. 2007, Nat Biotechnol 25:803) to characterise human ES cell
# lines, plus the ES-cell-associated candidates screened by Takahashi &
# Yamanaka (2006, Cell 126:663).
_PLURIPOTENCY = (
    "POU5F1", "NANOG", "SOX2", "LIN28A", "DPPA4", "TDGF1", "ZFP42", "DNMT3B",
    "SALL4", "PRDM14", "UTF1", "TERT", "LEFTY1", "LEFTY2", "GDF3", "DPPA2",
    "DPPA3", "KLF4", "L1TD1", "FOXD3", "GABRB3", "NODAL",
)  # fmt: skip

#: Categories with a built-in list, in the order used everywhere.
CATEGORIES: tuple[str, ...] = ("tf", "cell_cycle", "metabolic", "pluripotency")

#: Built-in gene sets: category -> tuple of current HGNC symbols (short, curated).
BUILTIN_GENE_SETS: dict[str, tuple[str, ...]] = {
    "tf": _TF,
    "cell_cycle": _CELL_CYCLE,
    "metabolic": _METABOLIC,
    "pluripotency": _PLURIPOTENCY,
}
